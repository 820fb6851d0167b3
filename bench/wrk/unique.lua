-- wrk script: unique JSON events with unique Idempotency-Keys, one per request.
--
--   wrk -t2 -c256 -d15s --timeout 45s -s bench/wrk/unique.lua \
--       http://127.0.0.1:8080/v1/topics/orders/events -- RUN BYTES [TOKEN]
--
-- RUN prefixes every key (`RUN-<thread>-<n>`: use a fresh one per run), BYTES is the exact body
-- size (default 1024), TOKEN an optional bearer token. The body is the bench's own event shape,
-- {"key":"<key>","pad":"xxx…"}. The benchmark (`scripts/bench.sh`, phase `gateway_wrk`) runs it
-- and reads the one JSON line `done` prints: the answers, latency percentiles and wrk's own CPU.

local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

local prefix, bytes, pad, headers
local counter = 0
ok, other = 0, 0 -- per thread; globals, so that `done` can read them with thread:get

function init(args)
    prefix = (args[1] or "wrk") .. "-" .. id .. "-"
    bytes = tonumber(args[2] or "1024")
    pad = string.rep("x", bytes)
    headers = { ["Content-Type"] = "application/json" }
    if args[3] then
        headers["Authorization"] = "Bearer " .. args[3]
    end
end

function request()
    counter = counter + 1
    local key = prefix .. counter
    -- {"key":"…","pad":"…"}: 19 bytes around the key and the padding.
    local fill = bytes - 19 - #key
    if fill < 0 then
        fill = 0
    end
    headers["Idempotency-Key"] = key
    local body = '{"key":"' .. key .. '","pad":"' .. string.sub(pad, 1, fill) .. '"}'
    return wrk.format("POST", nil, headers, body)
end

-- Only 201 is a success here: a 202 (no delivery report within the wait) or anything else is
-- counted apart, so the benchmark can tell a fast gateway from one that answers early.
function response(status, _headers, _body)
    if status == 201 then
        ok = ok + 1
    else
        other = other + 1
    end
end

local function cpu_ticks()
    local file = assert(io.open("/proc/self/stat", "r"))
    local stat = file:read("*a")
    file:close()
    -- Fields after the command name's closing parenthesis: utime and stime are the 12th and 13th.
    local rest = stat:match(".*%)%s+(.*)")
    local fields = {}
    for field in rest:gmatch("%S+") do
        table.insert(fields, field)
    end
    return tonumber(fields[12]) + tonumber(fields[13])
end

function done(summary, latency, _requests)
    local created, others = 0, 0
    for _, thread in ipairs(threads) do
        created = created + thread:get("ok")
        others = others + thread:get("other")
    end
    local e = summary.errors
    io.write(string.format(
        '{"wrk":1,"requests":%d,"created":%d,"other":%d,"duration_us":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"p50":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f},"cpu_ticks":%d}\n',
        summary.requests, created, others, summary.duration,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
        latency.max, latency.mean, cpu_ticks()))
end
