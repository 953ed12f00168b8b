#!/bin/sh
# Installs dlsrv behind NGINX on Debian 12 or Ubuntu 22.04/24.04.
# Idempotent: run it again after an upgrade or to add a logger.
# Run with --help for the options.
#
# With DESTDIR=/some/dir in the environment nothing on the system is
# touched: the files are only laid out under that directory (no apt, no
# users, no chown, no systemctl, no NGINX reload, no root needed).

set -eu
umask 022

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
REPO_DIR=$(dirname -- "$SCRIPT_DIR")

# ---- Where things go (DESTDIR is put in front when writing) ---------------
BIN=/usr/local/bin/dlsrv
CONF_DIR=/etc/dlsrv
CONF=$CONF_DIR/dlsrv.toml
# Which stations each logger login may speak for (logins_file in dlsrv.toml).
LOGINS=$CONF_DIR/logins.toml
# Export feeds' settings (install.sh --export-to NAME URL): NAME.toml each.
EXPORT_DIR=$CONF_DIR/export
UNIT_DIR=/etc/systemd/system
DROPIN_DIR=$UNIT_DIR/dlsrv.service.d
DROPIN=$DROPIN_DIR/data-dir.conf
# The replicator removes bodies (retention): the same drop-in for it.
REPLICA_DROPIN_DIR=$UNIT_DIR/dlsrv-replica.service.d
REPLICA_DROPIN=$REPLICA_DROPIN_DIR/data-dir.conf
TMPFILES=/etc/tmpfiles.d/dlsrv.conf
SITE=/etc/nginx/sites-available/dlsrv.conf
SITE_LINK=/etc/nginx/sites-enabled/dlsrv.conf
SITE_LINK_TARGET=../sites-available/dlsrv.conf
HTPASSWD=/etc/nginx/.htpasswd
# Operators' logins, for the status pages (/status) only.
OPERATORS_HTPASSWD=/etc/nginx/.htpasswd-operators
JAIL=/etc/fail2ban/jail.d/dlsrv.conf
SOCKET_DIR=/run/dlsrv
DEFAULT_DATA_DIR=/var/lib/dlsrv
# The service's own state (state_dir in dlsrv.toml): catalog, queue, rejected bodies.
STATE_DIR=/var/lib/dlsrv-state
# Files served on getconfiguration/getfirmware (downloads_dir in dlsrv.toml).
DOWNLOADS_DIR=/srv/dlsrv/downloads
SERVICE_USER=dlsrv
NGINX_GROUP=www-data
# Defaults as written in deploy/nginx/dlsrv.conf, replaced when rendering.
TEMPLATE_SERVER_NAME=dlsrv.example.org
TEMPLATE_CERT=/etc/nginx/ssl/dlsrv.crt
TEMPLATE_KEY=/etc/nginx/ssl/dlsrv.key

# ---- Output ---------------------------------------------------------------
step() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}
# Prints a command, then runs it.
run() {
    printf '    $ %s\n' "$*"
    "$@"
}

usage() {
    cat <<'EOF'
Usage: deploy/install.sh [OPTIONS]

Installs dlsrv (binary, /etc/dlsrv/dlsrv.toml, systemd units, NGINX site)
on Debian 12 or Ubuntu 22.04/24.04. Safe to run again.

Options:
  --binary PATH        dlsrv binary to install (default: target/release/dlsrv
                       of this repository, built with cargo if missing)
  --server-name NAME   host name the loggers use (default: the one of an
                       installed site, else dlsrv.example.org)
  --cert FILE          TLS certificate (default: the installed site's, else
                       /etc/nginx/ssl/dlsrv.crt)
  --key FILE           TLS private key (default: the installed site's, else
                       /etc/nginx/ssl/dlsrv.key)
  --self-signed        create a self-signed certificate if none exists at
                       the certificate path
  --data-dir DIR       archive directory (default /var/lib/dlsrv); keeps an
                       old archive path when migrating. Used for a new
                       /etc/dlsrv/dlsrv.toml; adds a systemd drop-in with
                       ReadWritePaths=DIR
  --add-logger NAME    add (or change) a logger's basic-auth login; the
                       password is prompted for, or read from the environment
                       variable LOGGER_PASSWORD. May be repeated.
  --station ID         a station the login before it may speak for (repeat it
                       for several; ID* for every id with that prefix): sets
                       the login's line in /etc/dlsrv/logins.toml
  --add-operator NAME  add (or change) an operator's login for the status pages
                       (/status), kept apart from the loggers' in
                       /etc/nginx/.htpasswd-operators; the password is prompted
                       for, or read from OPERATOR_PASSWORD. May be repeated.
  --catalog URL        share the catalog and the command queue with other hosts
                       in the PostgreSQL database URL (postgresql://…): adds
                       catalog_url to /etc/dlsrv/dlsrv.toml (root:dlsrv 0640)
                       when it has none (docs/operations.md, "Two hosts")
  --export-to NAME URL set up the export feed NAME into the PostgreSQL database
                       URL (libpq: postgresql://user@host/db or key=value):
                       /etc/dlsrv/export/NAME.toml and dlsrv-export@NAME.service
                       (docs/export.md, "Feeds")
  --fail2ban           install fail2ban and a jail for basic-auth failures
  --uninstall          stop and remove dlsrv's binary, units and NGINX site;
                       keeps the archive, /etc/dlsrv, logins and certificates
  -h, --help           show this help

Environment:
  DESTDIR=DIR          only lay the files out under DIR (for packaging or
                       checking); changes nothing else on this machine
  LOGGER_PASSWORD      password for --add-logger (non-interactive use)
  OPERATOR_PASSWORD    password for --add-operator (non-interactive use)
EOF
}

# ---- Options --------------------------------------------------------------
BINARY=
SERVER_NAME=
CERT=
KEY=
SELF_SIGNED=0
DATA_DIR=
CATALOG=
LOGGERS=
OPERATORS=
# "login=id,id login2=id": the stations given after each --add-logger.
LOGGER_STATIONS=
FAIL2BAN=0
UNINSTALL=0
# "NAME URL" per --export-to, one per line.
EXPORTS=

need_arg() {
    [ "$#" -ge 2 ] || die "$1 needs an argument (see --help)"
}

while [ "$#" -gt 0 ]; do
    case $1 in
        --binary) need_arg "$@"; BINARY=$2; shift 2 ;;
        --binary=*) BINARY=${1#*=}; shift ;;
        --server-name) need_arg "$@"; SERVER_NAME=$2; shift 2 ;;
        --server-name=*) SERVER_NAME=${1#*=}; shift ;;
        --cert) need_arg "$@"; CERT=$2; shift 2 ;;
        --cert=*) CERT=${1#*=}; shift ;;
        --key) need_arg "$@"; KEY=$2; shift 2 ;;
        --key=*) KEY=${1#*=}; shift ;;
        --self-signed) SELF_SIGNED=1; shift ;;
        --data-dir) need_arg "$@"; DATA_DIR=$2; shift 2 ;;
        --data-dir=*) DATA_DIR=${1#*=}; shift ;;
        --add-logger) need_arg "$@"; LOGGERS="$LOGGERS $2"; LOGGER_STATIONS="$LOGGER_STATIONS $2="; shift 2 ;;
        --add-logger=*) LOGGERS="$LOGGERS ${1#*=}"; LOGGER_STATIONS="$LOGGER_STATIONS ${1#*=}="; shift ;;
        --station | --station=*)
            if [ "$1" = --station ]; then need_arg "$@"; ID=$2; shift 2; else ID=${1#*=}; shift; fi
            [ -n "$LOGGER_STATIONS" ] || die "--station $ID: give it after the --add-logger it belongs to"
            case $LOGGER_STATIONS in *=) LOGGER_STATIONS="$LOGGER_STATIONS$ID" ;; *) LOGGER_STATIONS="$LOGGER_STATIONS,$ID" ;; esac
            ;;
        --add-operator) need_arg "$@"; OPERATORS="$OPERATORS $2"; shift 2 ;;
        --add-operator=*) OPERATORS="$OPERATORS ${1#*=}"; shift ;;
        --catalog) need_arg "$@"; CATALOG=$2; shift 2 ;;
        --catalog=*) CATALOG=${1#*=}; shift ;;
        --export-to)
            [ "$#" -ge 3 ] || die "--export-to needs NAME and URL (see --help)"
            case $2 in
                '' | .* | *[!A-Za-z0-9._-]*) die "--export-to $2: a name of A-Z a-z 0-9 . _ - (not starting with .)" ;;
            esac
            EXPORTS="$EXPORTS$2 $3
"
            shift 3 ;;
        --fail2ban) FAIL2BAN=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

# ---- DESTDIR --------------------------------------------------------------
DESTDIR=${DESTDIR:-}
STAGED=0
if [ -n "$DESTDIR" ]; then
    STAGED=1
    case $DESTDIR in
        /*) ;;
        *) DESTDIR=$(pwd)/$DESTDIR ;;
    esac
    while :; do
        case $DESTDIR in
            */) DESTDIR=${DESTDIR%/} ;;
            *) break ;;
        esac
    done
fi
# d PATH: where PATH is written (inside DESTDIR when staging).
d() { printf '%s%s' "$DESTDIR" "$1"; }

# ---- Helpers --------------------------------------------------------------
TMPFILES_TO_CLEAN=
cleanup() {
    for f in $TMPFILES_TO_CLEAN; do
        rm -f "$f"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

new_tmp() {
    TMP=$(mktemp "${TMPDIR:-/tmp}/dlsrv-install.XXXXXX")
    TMPFILES_TO_CLEAN="$TMPFILES_TO_CLEAN $TMP"
}

# check_path WHAT PATH: absolute and made of characters that are safe in
# sed, TOML and systemd unit files.
check_path() {
    case $2 in
        /*) ;;
        *) die "$1 must be an absolute path: $2" ;;
    esac
    case $2 in
        *[!A-Za-z0-9._/@+-]*) die "$1 may only contain A-Z a-z 0-9 . _ / @ + -: $2" ;;
    esac
}

pkg_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

# put_file SRC DEST MODE: installs SRC as DEST unless identical;
# sets CHANGED=1 when it wrote something.
put_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        info "unchanged: $2"
    else
        run install -m "$3" "$1" "$2"
        CHANGED=1
    fi
}

# ensure_dir MODE DIR...: creates missing directories; existing ones are
# left as they are.
ensure_dir() {
    ed_mode=$1
    shift
    for ed_dir in "$@"; do
        [ -d "$ed_dir" ] || run install -d -m "$ed_mode" "$ed_dir"
    done
}

# remove_path PATH: removes a file or symlink if present.
remove_path() {
    if [ -e "$1" ] || [ -L "$1" ]; then
        run rm -f "$1"
    else
        info "not present: $1"
    fi
}

# ensure_htpasswd FILE: an NGINX basic-auth file, created empty when missing
# (NGINX then answers 401, not 500, until a login is added); an existing one is kept.
ensure_htpasswd() {
    if [ -e "$(d "$1")" ]; then
        info "exists, kept"
    else
        ensure_dir 0755 "$(d "$(dirname "$1")")"
        run install -m 0640 /dev/null "$(d "$1")"
    fi
}

# set_password FILE NAME OPTION VAR: sets NAME's bcrypt password in FILE
# (-B: NGINX's crypt(3), libxcrypt, understands it) from the environment
# variable VAR, else from the terminal; OPTION names the flag in errors.
set_password() {
    sp_password=$(printenv "$4" || true)
    if [ -n "$sp_password" ]; then
        info "$ htpasswd -i -B $(d "$1") $2  (password from $4)"
        printf '%s\n' "$sp_password" | htpasswd -i -B "$(d "$1")" "$2"
    elif [ -t 0 ]; then
        run htpasswd -B "$(d "$1")" "$2"
    else
        die "$3 $2: no terminal to ask for the password; set $4"
    fi
    sp_password=""
}

# nginx_readable FILE: owned by root, readable by NGINX's workers, by nobody else.
nginx_readable() {
    if [ "$STAGED" -eq 0 ] && [ "$(stat -c %U:%G:%a "$1")" != "root:$NGINX_GROUP:640" ]; then
        run chown "root:$NGINX_GROUP" "$1"
        run chmod 0640 "$1"
    fi
}

# site_value DIRECTIVE: first value of DIRECTIVE in the installed site.
site_value() {
    [ -f "$(d "$SITE")" ] || return 0
    sed -n "s/^[[:space:]]*$1[[:space:]][[:space:]]*\([^;[:space:]]*\);.*/\1/p" "$(d "$SITE")" | head -n 1
}

# conf_has_state_dir: whether the installed dlsrv.toml sets state_dir.
conf_has_state_dir() {
    grep -q "^[[:space:]]*state_dir[[:space:]]*=" "$(d "$CONF")"
}

# conf_data_dir: data_dir of the installed dlsrv.toml (empty if none).
conf_data_dir() {
    [ -f "$(d "$CONF")" ] || return 0
    sed -n "s/^[[:space:]]*data_dir[[:space:]]*=[[:space:]]*[\"']\([^\"']*\)[\"'].*/\1/p" "$(d "$CONF")" | tail -n 1
}

systemd_running() {
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# ===========================================================================
uninstall() {
    step "Uninstalling dlsrv${DESTDIR:+ from $DESTDIR}"
    if [ "$STAGED" -eq 0 ]; then
        [ "$(id -u)" -eq 0 ] || die "run as root (or set DESTDIR to work on a staging directory)"
        if systemd_running; then
            step "Stopping and disabling dlsrv.service, dlsrv.socket and dlsrv-report.timer"
            run systemctl disable --now dlsrv-report.timer 2>/dev/null || true
            run systemctl disable --now dlsrv-verify.timer dlsrv-replica.service 2>/dev/null || true
            run systemctl disable --now dlsrv.service dlsrv.socket || warn "could not stop/disable the units (not installed?)"
        fi
    fi

    UN_DATA_DIR=$(conf_data_dir)
    UN_DATA_DIR=${UN_DATA_DIR:-$DEFAULT_DATA_DIR}

    step "Removing the binary"
    remove_path "$(d "$BIN")"

    step "Removing the systemd units"
    remove_path "$(d "$UNIT_DIR/dlsrv.service")"
    remove_path "$(d "$UNIT_DIR/dlsrv.socket")"
    remove_path "$(d "$UNIT_DIR/dlsrv-report.service")"
    remove_path "$(d "$UNIT_DIR/dlsrv-report.timer")"
    remove_path "$(d "$UNIT_DIR/dlsrv-export@.service")"
    remove_path "$(d "$UNIT_DIR/dlsrv-replica.service")"
    remove_path "$(d "$UNIT_DIR/dlsrv-verify.service")"
    remove_path "$(d "$UNIT_DIR/dlsrv-verify.timer")"
    for f in dlsrv-rules.yml dlsrv-rules.test.yml alertmanager.yml; do
        remove_path "$(d "/usr/share/dlsrv/prometheus/$f")"
    done
    rmdir "$(d /usr/share/dlsrv/prometheus)" "$(d /usr/share/dlsrv)" 2>/dev/null || true
    remove_path "$(d "$REPLICA_DROPIN")"
    rmdir "$(d "$REPLICA_DROPIN_DIR")" 2>/dev/null || true
    remove_path "$(d "$DROPIN")"
    if [ -d "$(d "$DROPIN_DIR")" ]; then
        rmdir "$(d "$DROPIN_DIR")" 2>/dev/null || info "kept $(d "$DROPIN_DIR") (it has other drop-ins)"
    fi
    remove_path "$(d "$TMPFILES")"

    step "Removing the NGINX site"
    remove_path "$(d "$SITE_LINK")"
    remove_path "$(d "$SITE")"

    JAIL_REMOVED=0
    if [ -e "$(d "$JAIL")" ]; then
        step "Removing the fail2ban jail"
        remove_path "$(d "$JAIL")"
        JAIL_REMOVED=1
    fi

    if [ "$STAGED" -eq 0 ]; then
        if systemd_running; then
            step "Reloading systemd"
            run systemctl daemon-reload
            run systemctl reset-failed dlsrv.service dlsrv.socket 2>/dev/null || true
        fi
        rmdir "$SOCKET_DIR" 2>/dev/null || true
        if command -v nginx >/dev/null 2>&1; then
            step "Testing and reloading NGINX"
            if run nginx -t; then
                if systemctl is-active --quiet nginx; then
                    run systemctl reload nginx
                fi
            else
                warn "nginx -t failed, NGINX was not reloaded; fix the configuration"
            fi
        fi
        if [ "$JAIL_REMOVED" -eq 1 ] && systemctl is-active --quiet fail2ban; then
            run systemctl reload-or-restart fail2ban || warn "could not reload fail2ban"
        fi
    fi

    step "Kept (remove by hand if no longer needed):"
    info "archive:        $(d "$UN_DATA_DIR")"
    info "state:          $(d "$STATE_DIR") (catalog, command queue, rejected bodies)"
    info "configuration:  $(d "$CONF_DIR")/ (with the logins file $(d "$LOGINS"))"
    info "logins:         $(d "$HTPASSWD"), operators: $(d "$OPERATORS_HTPASSWD")"
    info "reports:        /var/lib/dlsrv-reports (if the timer ran)"
    info "TLS files:      $(d "$TEMPLATE_CERT"), $(d "$TEMPLATE_KEY") (or those given with --cert/--key)"
    info "site backups:   $(d "$SITE").bak.* (if any)"
    info "user and group: $SERVICE_USER; packages nginx, apache2-utils (and fail2ban)"
    step "dlsrv uninstalled"
}

# ===========================================================================
if [ "$UNINSTALL" -eq 1 ]; then
    uninstall
    exit 0
fi

# ---- Preflight ------------------------------------------------------------
step "Preflight checks"
if [ "$STAGED" -eq 1 ]; then
    info "DESTDIR=$DESTDIR: only laying out files, the system is not changed"
else
    [ "$(id -u)" -eq 0 ] || die "run as root, e.g. sudo $0 (or set DESTDIR=DIR to only stage the files)"
    systemd_running || die "systemd is not running here; dlsrv needs it (set DESTDIR=DIR to only stage the files)"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian 12 and Ubuntu 22.04/24.04"
fi

OS_ID=
OS_VERSION=
if [ -r /etc/os-release ]; then
    OS_ID=$(sed -n 's/^ID=//p' /etc/os-release | tr -d '"')
    OS_VERSION=$(sed -n 's/^VERSION_ID=//p' /etc/os-release | tr -d '"')
fi
case "$OS_ID $OS_VERSION" in
    "debian 12" | "ubuntu 22.04" | "ubuntu 24.04") info "OS: $OS_ID $OS_VERSION (supported)" ;;
    *) warn "OS '${OS_ID:-unknown} ${OS_VERSION:-?}' is not Debian 12 or Ubuntu 22.04/24.04; continuing anyway" ;;
esac

# The binary.
if [ -n "$BINARY" ]; then
    [ -f "$BINARY" ] || die "--binary $BINARY: no such file"
    [ -x "$BINARY" ] || die "--binary $BINARY: not executable"
elif [ -x "$REPO_DIR/target/release/dlsrv" ]; then
    BINARY=$REPO_DIR/target/release/dlsrv
elif command -v cargo >/dev/null 2>&1; then
    step "Building dlsrv (cargo build --release)"
    (cd "$REPO_DIR" && run cargo build --release --locked)
    BINARY=$REPO_DIR/target/release/dlsrv
    [ -x "$BINARY" ] || die "cargo build did not produce $BINARY"
else
    die "no dlsrv binary: pass --binary PATH, or build it first with 'cargo build --release' in $REPO_DIR (cargo is not installed for this user; building as a normal user is better anyway)"
fi
info "binary: $BINARY"
if BINARY_VERSION=$("$BINARY" --version 2>/dev/null); then
    info "version: $BINARY_VERSION"
else
    warn "$BINARY --version failed; is it a dlsrv binary for this machine?"
fi

for f in dlsrv.toml systemd/dlsrv.service systemd/dlsrv.socket systemd/dlsrv.tmpfiles \
    systemd/dlsrv-report.service systemd/dlsrv-report.timer systemd/dlsrv-export@.service \
    systemd/dlsrv-replica.service systemd/dlsrv-verify.service systemd/dlsrv-verify.timer \
    nginx/dlsrv.conf fail2ban/jail.d/dlsrv.conf; do
    [ -f "$SCRIPT_DIR/$f" ] || die "missing $SCRIPT_DIR/$f: run this script from a complete checkout"
done

# Host name and TLS files: options, else what the installed site uses.
[ -n "$SERVER_NAME" ] || SERVER_NAME=$(site_value server_name)
if [ -z "$SERVER_NAME" ]; then
    SERVER_NAME=$TEMPLATE_SERVER_NAME
    warn "no --server-name given; using the placeholder $SERVER_NAME"
fi
case $SERVER_NAME in
    "" | *[!A-Za-z0-9.-]*) die "--server-name must be a host name (A-Z a-z 0-9 . -): $SERVER_NAME" ;;
esac
[ -n "$CERT" ] || CERT=$(site_value ssl_certificate)
[ -n "$KEY" ] || KEY=$(site_value ssl_certificate_key)
CERT=${CERT:-$TEMPLATE_CERT}
KEY=${KEY:-$TEMPLATE_KEY}
check_path --cert "$CERT"
check_path --key "$KEY"
info "server name: $SERVER_NAME"
info "certificate: $CERT, key: $KEY"
if [ -f "$(d "$CERT")" ] && [ -f "$(d "$KEY")" ]; then
    :
elif [ -e "$(d "$CERT")" ] || [ -e "$(d "$KEY")" ]; then
    die "only one of $(d "$CERT") and $(d "$KEY") exists; provide both, or remove the other and use --self-signed"
elif [ "$SELF_SIGNED" -eq 0 ]; then
    if [ "$STAGED" -eq 1 ]; then
        warn "no certificate at $(d "$CERT"); NGINX will need one (--self-signed or --cert/--key)"
    else
        die "no certificate at $CERT: pass --cert FILE --key FILE, put them there, or use --self-signed"
    fi
fi

# The archive directory: --data-dir, else the installed config's, else default.
CONF_DATA_DIR=$(conf_data_dir)
if [ -n "$DATA_DIR" ]; then
    if [ -n "$CONF_DATA_DIR" ] && [ "$CONF_DATA_DIR" != "$DATA_DIR" ]; then
        die "$(d "$CONF") (kept, never overwritten) has data_dir = \"$CONF_DATA_DIR\", not $DATA_DIR: edit it first, then run this again"
    fi
elif [ -n "$CONF_DATA_DIR" ]; then
    DATA_DIR=$CONF_DATA_DIR
else
    [ ! -f "$(d "$CONF")" ] || warn "$(d "$CONF") has no data_dir; assuming $DEFAULT_DATA_DIR"
    DATA_DIR=$DEFAULT_DATA_DIR
fi
while :; do
    case $DATA_DIR in
        ?*/) DATA_DIR=${DATA_DIR%/} ;;
        *) break ;;
    esac
done
check_path --data-dir "$DATA_DIR"
case $DATA_DIR in
    / | /bin | /boot | /dev | /etc | /home | /lib | /lib64 | /media | /mnt | /opt | /proc | /root | \
        /run | /sbin | /srv | /sys | /tmp | /usr | /var | /var/lib | /var/log | /var/tmp | \
        /usr/* | /etc/* | /proc/* | /sys/* | /dev/* | /boot/* | /run/* | /tmp/* | /var/tmp/*)
        die "--data-dir $DATA_DIR: choose a dedicated directory (e.g. /srv/dlsrv or /var/lib/dlsrv)" ;;
    /home/* | /root/*)
        die "--data-dir $DATA_DIR: home directories are hidden from the service (ProtectHome=yes)" ;;
esac
info "data directory: $DATA_DIR"

for name in $LOGGERS; do
    case $name in
        *[!A-Za-z0-9._@-]*) die "--add-logger $name: use only A-Z a-z 0-9 . _ @ -" ;;
    esac
done
for entry in $LOGGER_STATIONS; do
    ids=${entry#*=}
    for id in $(printf '%s' "$ids" | tr ',' ' '); do
        bare=${id%\*}
        case $bare in
            "" ) [ "$id" = "*" ] || die "--station $id: not a station id" ;;
            *[!A-Za-z0-9_-]*) die "--station $id: use 1-64 of A-Z a-z 0-9 _ - (and a trailing * for a prefix)" ;;
        esac
        [ "${#bare}" -le 64 ] || die "--station $id: longer than 64 characters"
    done
done

# ---- Packages -------------------------------------------------------------
if [ "$STAGED" -eq 0 ]; then
    step "Checking packages"
    set -- nginx apache2-utils
    [ "$SELF_SIGNED" -eq 0 ] || set -- "$@" openssl
    [ "$FAIL2BAN" -eq 0 ] || set -- "$@" fail2ban
    MISSING=
    for p in "$@"; do
        if pkg_installed "$p"; then
            info "installed: $p"
        else
            MISSING="$MISSING $p"
        fi
    done
    if [ -n "$MISSING" ]; then
        step "Installing packages:$MISSING"
        run apt-get update
        # shellcheck disable=SC2086 # MISSING is a list of package names
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y $MISSING
    fi
fi

# ---- User and group -------------------------------------------------------
if [ "$STAGED" -eq 0 ]; then
    step "Service user $SERVICE_USER"
    if getent group "$SERVICE_USER" >/dev/null; then
        info "group $SERVICE_USER exists"
    else
        run groupadd --system "$SERVICE_USER"
    fi
    if getent passwd "$SERVICE_USER" >/dev/null; then
        info "user $SERVICE_USER exists"
    else
        run useradd --system --gid "$SERVICE_USER" --home-dir "$DEFAULT_DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "dlsrv data logger receiver" "$SERVICE_USER"
    fi
    getent group "$NGINX_GROUP" >/dev/null || die "group $NGINX_GROUP (NGINX's workers) does not exist"
    # No membership in www-data needed: dlsrv.socket creates the socket with
    # group www-data, dlsrv never has to chown it.
fi

# ---- Binary ---------------------------------------------------------------
step "Installing the binary to $(d "$BIN")"
SERVICE_CHANGED=0
SOCKET_CHANGED=0
ensure_dir 0755 "$(d "$(dirname "$BIN")")"
CHANGED=0
put_file "$BINARY" "$(d "$BIN")" 0755
[ "$CHANGED" -eq 0 ] || SERVICE_CHANGED=1

# ---- Configuration --------------------------------------------------------
step "Configuration $(d "$CONF")"
ensure_dir 0755 "$(d "$CONF_DIR")"
if [ -e "$(d "$CONF")" ]; then
    info "kept the existing $(d "$CONF") (never overwritten; compare with $SCRIPT_DIR/dlsrv.toml)"
    if ! conf_has_state_dir; then
        # An installation from before state_dir: the one key added to a kept
        # configuration (dlsrv moves its old state out of data_dir at start).
        info "it has no state_dir: adding state_dir = \"$STATE_DIR\" (docs/migration.md)"
        new_tmp
        cat "$(d "$CONF")" >"$TMP"
        cat >>"$TMP" <<END_OF_KEY

# Added by install.sh: the service's own state (catalog, command queue,
# rejected bodies), outside the archive. At its next start dlsrv moves the old
# commands/ and rejected/ from data_dir here (docs/migration.md).
state_dir = "$STATE_DIR"
END_OF_KEY
        run install -m 0640 "$TMP" "$(d "$CONF")"
        [ "$STAGED" -eq 1 ] || run chgrp "$SERVICE_USER" "$CONF"
        SERVICE_CHANGED=1
    fi
    if ! grep -q "^[[:space:]]*station_access[[:space:]]*=" "$(d "$CONF")"; then
        # From before station_access: keep what it did (every login for every
        # station) until the operator has filled the logins file.
        warn "$(d "$CONF") has no station_access: adding station_access = \"any\", as before; fill $LOGINS and set \"map\" (docs/migration.md)"
        new_tmp
        cat "$(d "$CONF")" >"$TMP"
        cat >>"$TMP" <<END_OF_KEY

# Added by install.sh: every login may still speak for every station, as before
# this key existed. Fill $LOGINS (install.sh --add-logger LOGIN --station ID)
# and set station_access = "map" (docs/migration.md).
station_access = "any"
logins_file = "$LOGINS"
END_OF_KEY
        run install -m 0640 "$TMP" "$(d "$CONF")"
        [ "$STAGED" -eq 1 ] || run chgrp "$SERVICE_USER" "$CONF"
        SERVICE_CHANGED=1
    fi
else
    new_tmp
    sed "s|^data_dir = .*|data_dir = \"$DATA_DIR\"|" "$SCRIPT_DIR/dlsrv.toml" >"$TMP"
    run install -m 0640 "$TMP" "$(d "$CONF")"
    [ "$STAGED" -eq 1 ] || run chgrp "$SERVICE_USER" "$CONF"
    SERVICE_CHANGED=1
fi

# ---- The shared catalog (--catalog) -----------------------------------------
if [ -n "$CATALOG" ]; then
    case $CATALOG in
        postgresql://* | postgres://*) ;;
        *) die "--catalog $CATALOG: a postgresql:// URL" ;;
    esac
    case $CATALOG in *\"* | *\\* | *"
"*) die "--catalog: the URL cannot hold a double quote, a backslash or a newline" ;; esac
    HAS_CATALOG=$(sed -n 's/^[[:space:]]*catalog_url[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$(d "$CONF")" | tail -n 1)
    if [ -z "$HAS_CATALOG" ]; then
        step "Shared catalog: catalog_url in $(d "$CONF")"
        new_tmp
        # A top-level key: before any [table] of the file.
        { printf '# Added by install.sh --catalog: the catalog and command queue shared by\n'
          printf '# several hosts (docs/operations.md, "Two hosts").\n'
          printf 'catalog_url = "%s"\n\n' "$CATALOG"
          cat "$(d "$CONF")"; } >"$TMP"
        run install -m 0640 "$TMP" "$(d "$CONF")"
        [ "$STAGED" -eq 1 ] || run chgrp "$SERVICE_USER" "$CONF"
        SERVICE_CHANGED=1
    elif [ "$HAS_CATALOG" != "$CATALOG" ]; then
        die "$(d "$CONF") (kept, never overwritten) has another catalog_url: edit it first, then run this again"
    fi
fi

# ---- Data directory -------------------------------------------------------
step "Data directory $(d "$DATA_DIR")"
if [ -d "$(d "$DATA_DIR")" ]; then
    info "exists, contents kept"
else
    run install -d -m 0750 "$(d "$DATA_DIR")"
fi
if [ "$STAGED" -eq 0 ]; then
    OWNER=$(stat -c %U:%G "$DATA_DIR")
    if [ "$OWNER" = "$SERVICE_USER:$SERVICE_USER" ]; then
        info "owned by $OWNER"
    else
        info "owned by $OWNER; handing it (and an archive already in it) to $SERVICE_USER"
        run chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
        run chmod 0750 "$DATA_DIR"
    fi
fi

# ---- State directory ------------------------------------------------------
step "State directory $(d "$STATE_DIR")"
if [ -d "$(d "$STATE_DIR")" ]; then
    info "exists, contents kept"
else
    run install -d -m 0750 "$(d "$STATE_DIR")"
fi
if [ "$STAGED" -eq 0 ]; then
    OWNER=$(stat -c %U:%G "$STATE_DIR")
    if [ "$OWNER" = "$SERVICE_USER:$SERVICE_USER" ]; then
        info "owned by $OWNER"
    else
        # Only the directory itself: whatever may be in it is the service's own.
        run chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
        run chmod 0750 "$STATE_DIR"
    fi
fi

# ---- Downloads (getconfiguration / getfirmware) ---------------------------
step "Downloads directory $(d "$DOWNLOADS_DIR")"
if [ -d "$(d "$DOWNLOADS_DIR")" ]; then
    info "exists, contents kept"
else
    # Owned by root, readable by the service: operators publish files here.
    run install -d -m 0755 "$(d "$DOWNLOADS_DIR")"
fi

# ---- systemd units --------------------------------------------------------
step "systemd units in $(d "$UNIT_DIR")"
ensure_dir 0755 "$(d "$UNIT_DIR")" "$(d "$(dirname "$TMPFILES")")"
CHANGED=0
put_file "$SCRIPT_DIR/systemd/dlsrv.service" "$(d "$UNIT_DIR/dlsrv.service")" 0644
[ "$CHANGED" -eq 0 ] || SERVICE_CHANGED=1
CHANGED=0
put_file "$SCRIPT_DIR/systemd/dlsrv.socket" "$(d "$UNIT_DIR/dlsrv.socket")" 0644
put_file "$SCRIPT_DIR/systemd/dlsrv.tmpfiles" "$(d "$TMPFILES")" 0644
[ "$CHANGED" -eq 0 ] || SOCKET_CHANGED=1
# The weekly report (docs/operations.md): enabled below.
put_file "$SCRIPT_DIR/systemd/dlsrv-report.service" "$(d "$UNIT_DIR/dlsrv-report.service")" 0644
put_file "$SCRIPT_DIR/systemd/dlsrv-report.timer" "$(d "$UNIT_DIR/dlsrv-report.timer")" 0644
# Export feeds (--export-to): the template, and each feed's settings.
put_file "$SCRIPT_DIR/systemd/dlsrv-export@.service" "$(d "$UNIT_DIR/dlsrv-export@.service")" 0644
# The replicator and the weekly verification (docs/operations.md): enabled below.
put_file "$SCRIPT_DIR/systemd/dlsrv-replica.service" "$(d "$UNIT_DIR/dlsrv-replica.service")" 0644
put_file "$SCRIPT_DIR/systemd/dlsrv-verify.service" "$(d "$UNIT_DIR/dlsrv-verify.service")" 0644
put_file "$SCRIPT_DIR/systemd/dlsrv-verify.timer" "$(d "$UNIT_DIR/dlsrv-verify.timer")" 0644
# The alert rules and an Alertmanager example, for the site's Prometheus
# (docs/operations.md, "Alerts"): copied beside the kit, wired in by hand.
ensure_dir 0755 "$(d /usr/share/dlsrv)" "$(d /usr/share/dlsrv/prometheus)"
for f in dlsrv-rules.yml dlsrv-rules.test.yml alertmanager.yml; do
    put_file "$SCRIPT_DIR/prometheus/$f" "$(d "/usr/share/dlsrv/prometheus/$f")" 0644
done
EXPORT_NAMES=
if [ -n "$EXPORTS" ]; then
    ensure_dir 0750 "$(d "$EXPORT_DIR")"
    [ "$STAGED" -eq 1 ] || chgrp dlsrv "$(d "$EXPORT_DIR")" 2>/dev/null || true
    while read -r EXPORT_NAME EXPORT_URL; do
        [ -n "$EXPORT_NAME" ] || continue
        case $EXPORT_URL in *\"* | *\\*) die "--export-to $EXPORT_NAME: the URL cannot hold a double quote or a backslash" ;; esac
        new_tmp
        cat >"$TMP" <<EOF
# The export feed $EXPORT_NAME (dlsrv-export@$EXPORT_NAME.service), written by
# install.sh --export-to. Keys: format ("postgres" or "jsonl"), database,
# stations, channels, events, lag_warn_secs (docs/export.md, "Feeds").
format = "postgres"
database = "$EXPORT_URL"
# Warn in the journal when the feed is this many seconds behind.
lag_warn_secs = 60
EOF
        put_file "$TMP" "$(d "$EXPORT_DIR/$EXPORT_NAME.toml")" 0640
        [ "$STAGED" -eq 1 ] || chgrp dlsrv "$(d "$EXPORT_DIR/$EXPORT_NAME.toml")" 2>/dev/null || true
        EXPORT_NAMES="$EXPORT_NAMES $EXPORT_NAME"
    done <<EOF
$EXPORTS
EOF
fi

CHANGED=0
if [ "$DATA_DIR" = "$DEFAULT_DATA_DIR" ]; then
    if [ -e "$(d "$DROPIN")" ]; then
        info "data_dir is the default again: removing the drop-in"
        run rm -f "$(d "$DROPIN")" "$(d "$REPLICA_DROPIN")"
        rmdir "$(d "$DROPIN_DIR")" "$(d "$REPLICA_DROPIN_DIR")" 2>/dev/null || true
        CHANGED=1
    fi
else
    ensure_dir 0755 "$(d "$DROPIN_DIR")"
    new_tmp
    cat >"$TMP" <<EOF
# Written by dlsrv's install.sh --data-dir: the archive (data_dir in
# $CONF) lies outside /var/lib/dlsrv, so the sandbox
# (ProtectSystem=strict) must let the service write there.
[Service]
ReadWritePaths=$DATA_DIR
EOF
    put_file "$TMP" "$(d "$DROPIN")" 0644
    ensure_dir 0755 "$(d "$REPLICA_DROPIN_DIR")"
    put_file "$TMP" "$(d "$REPLICA_DROPIN")" 0644
fi
[ "$CHANGED" -eq 0 ] || SERVICE_CHANGED=1

# ---- TLS certificate ------------------------------------------------------
step "TLS certificate"
if [ -f "$(d "$CERT")" ] && [ -f "$(d "$KEY")" ]; then
    info "using the existing $(d "$CERT") and $(d "$KEY")"
elif [ "$SELF_SIGNED" -eq 1 ]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed for --self-signed"
    ensure_dir 0755 "$(d "$(dirname "$CERT")")" "$(d "$(dirname "$KEY")")"
    # RSA 2048 and 10 years: the loggers' TLS stacks are old, and replacing
    # a certificate a logger trusts means visiting it.
    info "$ openssl req -x509 -newkey rsa:2048 -sha256 -days 3650 -nodes -subj /CN=$SERVER_NAME ... -keyout $(d "$KEY") -out $(d "$CERT")"
    if ! OPENSSL_OUT=$(
        umask 077
        openssl req -x509 -newkey rsa:2048 -sha256 -days 3650 -nodes \
            -subj "/CN=$SERVER_NAME" -addext "subjectAltName=DNS:$SERVER_NAME" \
            -keyout "$(d "$KEY")" -out "$(d "$CERT")" 2>&1
    ); then
        printf '%s\n' "$OPENSSL_OUT" >&2
        die "openssl could not create the certificate"
    fi
    run chmod 0644 "$(d "$CERT")"
    run chmod 0600 "$(d "$KEY")"
else
    info "no certificate yet (see the warning above)"
fi

# ---- Logins ---------------------------------------------------------------
step "Logger logins in $(d "$HTPASSWD")"
ensure_htpasswd "$HTPASSWD"
if [ -n "$LOGGERS" ]; then
    command -v htpasswd >/dev/null 2>&1 || die "htpasswd (package apache2-utils) is needed for --add-logger"
fi
for name in $LOGGERS; do
    if grep -q "^$name:" "$(d "$HTPASSWD")"; then
        info "logger $name exists: setting a new password"
    fi
    set_password "$HTPASSWD" "$name" --add-logger LOGGER_PASSWORD
done
# Not needed past this point; keep it out of every command run below.
unset LOGGER_PASSWORD

# ---- Operators' logins (status pages) ---------------------------------------
step "Operator logins in $(d "$OPERATORS_HTPASSWD")"
# Empty: /status answers 401 to everyone until an operator is added.
ensure_htpasswd "$OPERATORS_HTPASSWD"
if [ -n "$OPERATORS" ]; then
    command -v htpasswd >/dev/null 2>&1 || die "htpasswd (package apache2-utils) is needed for --add-operator"
fi
for name in $OPERATORS; do
    case $name in
        "" | -* | *[!A-Za-z0-9._@-]*) die "--add-operator $name: use only A-Z a-z 0-9 . _ @ -" ;;
    esac
    if grep -q "^$name:" "$(d "$HTPASSWD")"; then
        warn "operator $name is also a logger's login: dlsrv refuses the status pages to loggers' logins in $LOGINS (403)"
    fi
    set_password "$OPERATORS_HTPASSWD" "$name" --add-operator OPERATOR_PASSWORD
done
unset OPERATOR_PASSWORD
nginx_readable "$OPERATORS_HTPASSWD"

# ---- Which stations each login speaks for ---------------------------------
step "Logins file $(d "$LOGINS")"
if [ -e "$(d "$LOGINS")" ]; then
    info "exists, kept"
else
    new_tmp
    cat >"$TMP" <<'END_OF_LOGINS'
# dlsrv: which stations each logger login may speak for (station_access = "map").
# One line per login of /etc/nginx/.htpasswd; a trailing * matches every station id
# with that prefix. Checked by `dlsrv check-config`; re-read on `systemctl reload dlsrv`.
# Maintained by install.sh --add-logger LOGIN --station ID [--station ID ...].
#
#   "dl001" = ["0000452891", "0000452892"]
#   "dl002" = ["0077*"]
[logins]
END_OF_LOGINS
    run install -m 0640 "$TMP" "$(d "$LOGINS")"
    [ "$STAGED" -eq 1 ] || run chgrp "$SERVICE_USER" "$LOGINS"
fi
LOGINS_CHANGED=0
for entry in $LOGGER_STATIONS; do
    name=${entry%%=*}
    ids=${entry#*=}
    if [ -z "$ids" ]; then
        grep -q "^\"$name\" = " "$(d "$LOGINS")" ||
            warn "login $name speaks for no station in $LOGINS: add --station ID (with station_access = \"map\" it is refused 403)"
        continue
    fi
    line="\"$name\" = [$(printf '%s' "$ids" | sed 's/[^,][^,]*/"&"/g; s/,/, /g')]"
    new_tmp
    grep -v "^\"$name\" = " "$(d "$LOGINS")" >"$TMP" || true
    printf '%s\n' "$line" >>"$TMP"
    info "$name: $line"
    run install -m 0640 "$TMP" "$(d "$LOGINS")"
    [ "$STAGED" -eq 1 ] || run chgrp "$SERVICE_USER" "$LOGINS"
    LOGINS_CHANGED=1
done
nginx_readable "$HTPASSWD"

# ---- NGINX site -----------------------------------------------------------
step "NGINX site $(d "$SITE")"
ensure_dir 0755 "$(d "$(dirname "$SITE")")" "$(d "$(dirname "$SITE_LINK")")"
new_tmp
SITE_NEW=$TMP
sed -e "s|dlsrv\.example\.org|$SERVER_NAME|g" \
    -e "s|$TEMPLATE_CERT|$CERT|g" \
    -e "s|$TEMPLATE_KEY|$KEY|g" \
    "$SCRIPT_DIR/nginx/dlsrv.conf" >"$SITE_NEW"
SITE_BACKUP=
SITE_WAS_NEW=0
SITE_CHANGED=0
if [ -f "$(d "$SITE")" ] && cmp -s "$SITE_NEW" "$(d "$SITE")"; then
    info "unchanged: $(d "$SITE")"
else
    if [ -f "$(d "$SITE")" ]; then
        SITE_BACKUP=$(d "$SITE").bak.$(date +%Y%m%d%H%M%S)
        info "the installed site differs from the new one; backing it up"
        run cp -p "$(d "$SITE")" "$SITE_BACKUP"
    else
        SITE_WAS_NEW=1
    fi
    run install -m 0644 "$SITE_NEW" "$(d "$SITE")"
    SITE_CHANGED=1
fi
LINK_CREATED=0
if [ -L "$(d "$SITE_LINK")" ] && [ "$(readlink "$(d "$SITE_LINK")")" = "$SITE_LINK_TARGET" ]; then
    info "enabled: $(d "$SITE_LINK") -> $SITE_LINK_TARGET"
else
    if [ -e "$(d "$SITE_LINK")" ] || [ -L "$(d "$SITE_LINK")" ]; then
        info "replacing $(d "$SITE_LINK") (moved to $(d "$SITE").enabled.bak.$(date +%Y%m%d%H%M%S))"
        run mv "$(d "$SITE_LINK")" "$(d "$SITE").enabled.bak.$(date +%Y%m%d%H%M%S)"
    fi
    run ln -s "$SITE_LINK_TARGET" "$(d "$SITE_LINK")"
    LINK_CREATED=1
fi
if [ "$STAGED" -eq 0 ]; then
    grep -qs 'sites-enabled' /etc/nginx/nginx.conf ||
        warn "/etc/nginx/nginx.conf does not include sites-enabled/; include $SITE in its http {} block"
    OLD_SITES=$(grep -ls 'uwsgi_pass' /etc/nginx/sites-enabled/* /etc/nginx/conf.d/*.conf 2>/dev/null || true)
    [ -z "$OLD_SITES" ] || warn "still enabled, probably the old uWSGI service: $OLD_SITES (disable it when dlsrv works)"
fi

# ---- fail2ban -------------------------------------------------------------
if [ "$FAIL2BAN" -eq 1 ]; then
    step "fail2ban jail $(d "$JAIL")"
    ensure_dir 0755 "$(d "$(dirname "$JAIL")")"
    CHANGED=0
    put_file "$SCRIPT_DIR/fail2ban/jail.d/dlsrv.conf" "$(d "$JAIL")" 0644
    if [ "$STAGED" -eq 0 ]; then
        if run fail2ban-client -t; then
            run systemctl enable fail2ban
            run systemctl reload-or-restart fail2ban
        else
            warn "fail2ban's configuration test failed; fix it, then: systemctl restart fail2ban"
            warn "(on Debian 12 without rsyslog the stock sshd jail needs 'backend = systemd' in /etc/fail2ban/jail.d/defaults-debian.conf)"
        fi
    fi
fi

# ---- Staged: done ---------------------------------------------------------
if [ "$STAGED" -eq 1 ]; then
    step "Files laid out under $DESTDIR:"
    for f in "$BIN" "$CONF" "$UNIT_DIR/dlsrv.service" "$UNIT_DIR/dlsrv.socket" "$DROPIN" \
        "$UNIT_DIR/dlsrv-report.service" "$UNIT_DIR/dlsrv-report.timer" "$UNIT_DIR/dlsrv-export@.service" \
        "$UNIT_DIR/dlsrv-replica.service" "$UNIT_DIR/dlsrv-verify.service" "$UNIT_DIR/dlsrv-verify.timer" "$REPLICA_DROPIN" \
        "$TMPFILES" "$SITE" "$SITE_LINK" "$HTPASSWD" "$OPERATORS_HTPASSWD" "$LOGINS" "$JAIL" "$CERT" "$KEY" "$DATA_DIR"; do
        if [ -e "$(d "$f")" ] || [ -L "$(d "$f")" ]; then
            info "$(d "$f")"
        fi
    done
    info "nothing was started; as root on the target, run install.sh without DESTDIR"
    exit 0
fi

# ---- Start ----------------------------------------------------------------
step "Validating $CONF"
if ! CHECK_OUT=$("$BIN" check-config --config "$CONF" 2>&1); then
    printf '%s\n' "$CHECK_OUT" >&2
    die "dlsrv check-config failed; fix $CONF and run this again"
fi
info "dlsrv check-config: OK"

step "Enabling and starting dlsrv.socket and dlsrv.service"
run systemctl daemon-reload
# /run/dlsrv must be dlsrv:dlsrv before the socket is bound (see dlsrv.socket).
run systemd-tmpfiles --create "$(basename "$TMPFILES")"
run systemctl enable dlsrv.socket dlsrv.service
if [ "$SOCKET_CHANGED" -eq 1 ] && systemctl is-active --quiet dlsrv.socket; then
    info "dlsrv.socket changed: restarting it (and the service)"
    run systemctl restart dlsrv.socket
    SERVICE_CHANGED=1
else
    run systemctl start dlsrv.socket
fi
if [ "$SERVICE_CHANGED" -eq 1 ] && systemctl is-active --quiet dlsrv.service; then
    # Graceful: dlsrv drains in-flight requests, new ones wait in the socket.
    START=restart
else
    START=start
fi
if ! run systemctl "$START" dlsrv.service; then
    journalctl -u dlsrv.service -n 30 --no-pager >&2 || true
    die "dlsrv.service did not start (see above, and: systemctl status dlsrv)"
fi
if [ "$START" = start ] && [ "$LOGINS_CHANGED" -eq 1 ]; then
    # Already running with the old map (start was a no-op): re-read it.
    info "logins file changed: reloading dlsrv"
    run systemctl reload dlsrv.service || warn "could not reload dlsrv; run: systemctl reload dlsrv"
fi
info "dlsrv.service: $(systemctl is-active dlsrv.service)"
run systemctl enable --now dlsrv-report.timer || warn "could not enable dlsrv-report.timer"
run systemctl enable --now dlsrv-verify.timer || warn "could not enable dlsrv-verify.timer"
# The replicator reads [replica] and retention at start: restarted to take
# a changed configuration (without either, it says so and exits).
run systemctl enable dlsrv-replica.service || warn "could not enable dlsrv-replica.service"
run systemctl restart dlsrv-replica.service \
    || warn "dlsrv-replica did not start: journalctl -u dlsrv-replica"
for EXPORT_NAME in $EXPORT_NAMES; do
    step "Enabling the export feed $EXPORT_NAME"
    run systemctl enable "dlsrv-export@$EXPORT_NAME.service"
    run systemctl restart "dlsrv-export@$EXPORT_NAME.service" \
        || warn "dlsrv-export@$EXPORT_NAME did not start: journalctl -u dlsrv-export@$EXPORT_NAME"
done

step "Testing and reloading NGINX"
if ! run nginx -t; then
    if [ -n "$SITE_BACKUP" ]; then
        info "restoring the previous site from $SITE_BACKUP"
        cp -p "$SITE_BACKUP" "$SITE"
    elif [ "$SITE_WAS_NEW" -eq 1 ]; then
        rm -f "$SITE"
    fi
    if [ "$LINK_CREATED" -eq 1 ]; then
        rm -f "$SITE_LINK"
    fi
    die "nginx -t failed (see above); the previous NGINX configuration was restored and NGINX not reloaded"
fi
if systemctl is-active --quiet nginx; then
    if [ "$SITE_CHANGED" -eq 1 ] || [ "$LINK_CREATED" -eq 1 ]; then
        run systemctl reload nginx
    else
        info "NGINX site unchanged, no reload needed"
    fi
else
    run systemctl enable --now nginx
fi

# ---- Summary --------------------------------------------------------------
step "dlsrv is installed"
cat <<EOF
    Check it:
      systemctl status dlsrv.socket dlsrv.service
      journalctl -u dlsrv -f
      curl -s -o /dev/null -w '%{http_code}\n' https://$SERVER_NAME/server-status   # 204
      curl -u LOGGER --data-binary @FILE 'https://$SERVER_NAME/ott/?stationid=0000000001&action=senddata'
    (add --cacert $CERT to curl for a self-signed certificate)
    Add a logger:   $0 --add-logger NAME --station ID [--station ID ...]
    Status page:    https://$SERVER_NAME/status  (logins: $0 --add-operator NAME)
    Stations:       dlsrv status --config $CONF   (weekly report: /var/lib/dlsrv-reports)
    Archive:        $DATA_DIR    Config: $CONF    Site: $SITE
EOF
