# bench/render-site.awk: deploy/nginx/dlsrv.conf rendered for a benchmark.
#
#   awk -v port=PORT -v sock=SOCKET -v htpasswd=FILE [-v ceiling=1] [-v uwsgi=SOCKET] \
#       -f bench/render-site.awk deploy/nginx/dlsrv.conf
#
# Every line of the shipped site is kept except: the upstream socket (sock),
# `listen 443 ssl` -> `listen 127.0.0.1:PORT`, the ssl_* lines (no TLS),
# server_name, the htpasswd path, and the per-login limits (the map, the
# limit_*_zone and limit_* lines: one bench login stands for every logger). With ceiling=1 a `location = /ceiling`
# answers 200 after the login check without a backend (NGINX alone). With
# uwsgi=SOCKET the server proxies to a uWSGI application instead (the
# reference service): `location /` gets `uwsgi_pass`, its proxy_* lines go,
# and the upstream block is left out (the dlsrv server defines it).

function swap(s, from, to,   i) {
    i = index(s, from)
    return i ? substr(s, 1, i - 1) to substr(s, i + length(from)) : s
}

/^[ \t]*ssl_[a-z_]+[ \t]/ { next }
/^[ \t]*limit_(req|conn)[a-z_]*[ \t]/ { next }
/^map \$remote_user \$dlsrv_login_key \{/ { in_map = 1 }
in_map {
    if ($0 ~ /^\}/) in_map = 0
    next
}

uwsgi != "" && /^upstream dlsrv \{/ { skipping = 1 }
skipping {
    if ($0 ~ /^\}/) skipping = 0
    next
}

{
    l = $0
    l = swap(l, "unix:/run/dlsrv/dlsrv.sock", "unix:" sock)
    if (l ~ /^[ \t]*listen 443 ssl;/) l = swap(l, "listen 443 ssl;", "listen 127.0.0.1:" port ";")
    l = swap(l, "/etc/nginx/.htpasswd", htpasswd)
    l = swap(l, "server_name dlsrv.example.org;", "server_name localhost;")
    if (l ~ /^    location \/ \{/) {
        in_root = 1
        if (ceiling == 1 && !ceiling_done) {
            print "    # bench: NGINX alone. `return` runs before the access phase, so"
            print "    # it is reached through try_files, which runs after auth_basic. The"
            print "    # body is read and discarded."
            print "    location = /ceiling {"
            print "        try_files /bench-no-such-file @ceiling;"
            print "    }"
            print "    location @ceiling {"
            print "        return 200;"
            print "    }"
            print ""
            ceiling_done = 1
        }
    }
    if (uwsgi != "" && in_root) {
        if (l ~ /^[ \t]*proxy_pass /) {
            print "        # bench: the reference service under uWSGI."
            print "        include /etc/nginx/uwsgi_params;"
            print "        uwsgi_pass unix:" uwsgi ";"
            next
        }
        if (l ~ /^[ \t]*proxy_/) next
    }
    if (uwsgi != "" && l ~ /^[ \t]*proxy_pass http:\/\/dlsrv;/) {
        # /metrics of the reference server: there is none.
        l = "        return 404;"
    }
    if (in_root && l ~ /^    \}/) in_root = 0
    print l
}
