-- POST one JSON body with a rotating pool of bearer tokens; print the results as one JSON line.
--
-- Set by bench_gateway.py: BENCH_BODY_FILE (the body), BENCH_TOKENS_FILE (one token a line),
-- BENCH_PATH (request target), BENCH_PURPOSE (X-Share-Purpose). Runs for wrk's -d duration.

local function slurp(name)
  local file = assert(io.open(name, "rb"))
  local text = file:read("*a")
  file:close()
  return text
end

local prepared = {}
local count = 0
local next_index = 0

function init(args)
  local body = slurp(os.getenv("BENCH_BODY_FILE"))
  local path = os.getenv("BENCH_PATH")
  local purpose = os.getenv("BENCH_PURPOSE")
  for token in slurp(os.getenv("BENCH_TOKENS_FILE")):gmatch("[^\n]+") do
    count = count + 1
    -- Formatted once: the generator's own cost per request stays the same for every target.
    prepared[count] = wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token,
      ["X-Share-Purpose"] = purpose,
    }, body)
  end
end

function request()
  next_index = next_index % count + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
