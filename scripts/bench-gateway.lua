-- wrk script of scripts/bench-gateway.sh.
--   wrk ... -s bench-gateway.lua URL                 GET URL as is (the depth run)
--   wrk ... -s bench-gateway.lua URL -- FILES        signed POST /api/v3/order: thread i
--       sends the pre-signed form bodies of FILES.i in order ("user_index body" lines,
--       each body used once: its newClientOrderId is unique), with the API key of line
--       user_index of FILES.keys; a thread that has sent all of its bodies asks for
--       /exhausted instead (a 404, counted) and done() reports how many.
-- done() prints one machine-readable RESULT line (latencies in ms).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  files = args[1]
  exhausted = 0
  if files == nil then
    return
  end
  keys = {}
  for line in io.lines(files .. ".keys") do
    keys[#keys + 1] = line
  end
  users, bodies = {}, {}
  for line in io.lines(files .. "." .. id) do
    local u, b = line:match("^(%d+) (.*)$")
    users[#users + 1] = tonumber(u)
    bodies[#bodies + 1] = b
  end
  sent = 0
end

function request()
  if files == nil then
    return wrk.request()
  end
  sent = sent + 1
  if sent > #bodies then
    exhausted = exhausted + 1
    return wrk.format("GET", "/exhausted")
  end
  return wrk.format("POST", "/api/v3/order", {
    ["X-MBX-APIKEY"] = keys[users[sent]],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, bodies[sent])
end

function done(summary, latency, requests)
  local ex = 0
  for _, t in ipairs(threads) do
    ex = ex + (t:get("exhausted") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f non2xx=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d "
      .. "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f exhausted=%d\n",
    summary.requests, summary.duration / 1e6, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000, ex))
end
