-- wrk script: POST a valid Google push notification ("exists") for the
-- channel and token given in the environment (BENCH_CHANNEL, BENCH_TOKEN),
-- with an increasing X-Goog-Message-Number per thread. Prints the latency
-- percentiles and status counts as one machine-readable line at the end.
local channel = os.getenv("BENCH_CHANNEL") or "ch-bench"
local token = os.getenv("BENCH_TOKEN") or "tok-bench"
local counter = 1
local non200 = 0

function init(args)
  counter = 1
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/webhooks/google", {
    ["X-Goog-Channel-ID"] = channel,
    ["X-Goog-Channel-Token"] = token,
    ["X-Goog-Resource-State"] = "exists",
    ["X-Goog-Message-Number"] = tostring(counter),
    ["X-Goog-Resource-ID"] = "res-bench",
    ["X-Goog-Resource-URI"] = "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
    ["X-Goog-Channel-Expiration"] = "Tue, 25 Jan 2028 19:22:58 GMT",
    ["Content-Length"] = "0",
  }, "")
end

function done(summary, latency, requests)
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors_status=%d errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
end
