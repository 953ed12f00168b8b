-- wrk script of bench/run: POSTs ~44 KB senddata messages with basic auth,
-- every body distinct (dlsrv stores an identical body of a station only
-- once), spread over a pool of station ids.
--
--   wrk ... -s post.lua URL -- TEMPLATE AUTH RUN PATH [STATIONS]
--
-- TEMPLATE  the message with the placeholders @STATION@ (the stationId
--           attribute) and @TAG@ (inside an XML comment)
-- AUTH      the value of the Authorization header ("Basic ...")
-- RUN       a tag unique to this wrk run (bodies of different runs differ too)
-- PATH      "/ott/" for dlsrv, "/ceiling" for NGINX alone
-- STATIONS  size of the station pool (default 100)
--
-- done() prints one line "BENCH {json}" with the totals, the latency
-- percentiles in microseconds and the count of each non-2xx status.

local threads = {}
local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("tid", next_id)
   table.insert(threads, thread)
end

local pre = {}       -- per station: everything up to the tag
local post           -- everything after the tag
local paths = {}
local headers = {}
local run = ""
local counter = 0
local nstations = 100
codes = {}           -- non-2xx status -> count (read by done() via thread:get)

function init(args)
   local template_file, auth, run_tag, path = args[1], args[2], args[3], args[4]
   nstations = tonumber(args[5] or "100")
   local f = assert(io.open(template_file, "rb"))
   local template = f:read("*a")
   f:close()
   local s1, e1 = template:find("@STATION@", 1, true)
   local s2, e2 = template:find("@TAG@", 1, true)
   assert(s1 and s2 and s1 < s2, "template needs @STATION@ before @TAG@")
   local a, b = template:sub(1, s1 - 1), template:sub(e1 + 1, s2 - 1)
   post = template:sub(e2 + 1)
   run = run_tag
   for i = 1, nstations do
      local station = string.format("99%08d", i)
      pre[i] = a .. station .. b
      paths[i] = path .. "?stationid=" .. station .. "&action=senddata"
   end
   headers["Authorization"] = auth
   headers["Content-Type"] = "application/xml"
end

function request()
   counter = counter + 1
   local i = (counter + tid * 7) % nstations + 1
   local body = pre[i] .. "bench " .. run .. " thread " .. tid .. " n " .. counter .. post
   return wrk.format("POST", paths[i], headers, body)
end

function response(status, hdrs, body)
   if status < 200 or status > 299 then
      codes[status] = (codes[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local non2xx = {}
   local total = 0
   for _, t in ipairs(threads) do
      local c = t:get("codes")
      if c then
         for status, n in pairs(c) do
            non2xx[status] = (non2xx[status] or 0) + n
            total = total + n
         end
      end
   end
   local parts = {}
   for status, n in pairs(non2xx) do
      table.insert(parts, string.format('"%d":%d', status, n))
   end
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
      '"status_errors":%d,"non2xx":%d,"non2xx_by_status":{%s},' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status, total,
      table.concat(parts, ","),
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
