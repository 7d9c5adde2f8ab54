local H = require "helpers"

local P = H.load("working_hours")

local function moved_to(start, finish)
  return H.change{ kind = "time_change",
    new = { start = start, ["end"] = finish, title = "Intro call" } }
end

describe("policy: working_hours (on_time_change)", function()
  it("reschedules a move inside the default hours (Mon-Fri 09:00-17:00 UTC)", function()
    -- 2026-11-27 is a Friday
    local d = P.on_time_change(moved_to("2026-11-27T09:00:00Z", "2026-11-27T17:00:00Z"),
      H.booking(), H.ctx())
    assert.equal("reschedule", d.action)
  end)

  it("flags a move before the working day starts", function()
    local d = P.on_time_change(moved_to("2026-11-27T07:00:00Z", "2026-11-27T07:30:00Z"),
      H.booking(), H.ctx())
    assert.equal("flag", d.action)
    assert.matches("outside working hours", d.reason)
  end)

  it("flags a move that ends after the working day", function()
    local d = P.on_time_change(moved_to("2026-11-27T16:30:00Z", "2026-11-27T17:30:00Z"),
      H.booking(), H.ctx())
    assert.equal("flag", d.action)
  end)

  it("flags a move to a weekend day", function()
    local d = P.on_time_change(moved_to("2026-11-28T10:00:00Z", "2026-11-28T10:30:00Z"),
      H.booking(), H.ctx())
    assert.equal("flag", d.action)
  end)

  it("uses work_start, work_end, work_days and utc_offset from ctx.settings", function()
    local settings = { work_start = "07:00", work_end = "12:00", work_days = { 6 },
      utc_offset = "+02:00" }
    -- Saturday 08:00-08:30 at +02:00 is 06:00-06:30Z
    local d = P.on_time_change(moved_to("2026-11-28T06:00:00Z", "2026-11-28T06:30:00Z"),
      H.booking(), H.ctx{ settings = settings })
    assert.equal("reschedule", d.action)
    -- Friday is not a working day there
    d = P.on_time_change(moved_to("2026-11-27T06:00:00Z", "2026-11-27T06:30:00Z"),
      H.booking(), H.ctx{ settings = settings })
    assert.equal("flag", d.action)
  end)

  it("follows daylight saving in the host's zone", function()
    local berlin = { zone = "Europe/Berlin" }
    -- Friday 2026-03-27, CET (+01:00): 09:00-10:00 local is 08:00-09:00Z
    local d = P.on_time_change(moved_to("2026-03-27T08:00:00Z", "2026-03-27T09:00:00Z"),
      H.booking(), H.ctx{ settings = berlin })
    assert.equal("reschedule", d.action)
    -- Monday 2026-03-30, CEST (+02:00): 08:00Z is 10:00 local, 07:00Z 09:00
    d = P.on_time_change(moved_to("2026-03-30T07:00:00Z", "2026-03-30T08:00:00Z"),
      H.booking(), H.ctx{ settings = berlin })
    assert.equal("reschedule", d.action)
    -- the same UTC time a week earlier (CET) is 08:00 local: too early
    d = P.on_time_change(moved_to("2026-03-23T07:00:00Z", "2026-03-23T08:00:00Z"),
      H.booking(), H.ctx{ settings = berlin })
    assert.equal("flag", d.action)
    -- a fixed utc_offset cannot tell the two weeks apart
    d = P.on_time_change(moved_to("2026-03-23T07:00:00Z", "2026-03-23T08:00:00Z"),
      H.booking(), H.ctx{ settings = { utc_offset = "+02:00" } })
    assert.equal("reschedule", d.action)
  end)

  it("works on the host's weekdays in a zone east of UTC (Kathmandu, +05:45)", function()
    -- Sunday 2026-11-29 03:15Z is Sunday 09:00 there; Saturday 22:00Z is
    -- already Sunday 03:45 there
    local kat = { zone = "Asia/Kathmandu", work_days = { 7 } }
    local d = P.on_time_change(moved_to("2026-11-29T03:15:00Z", "2026-11-29T04:15:00Z"),
      H.booking(), H.ctx{ settings = kat })
    assert.equal("reschedule", d.action)
    d = P.on_time_change(moved_to("2026-11-28T22:00:00Z", "2026-11-28T22:30:00Z"),
      H.booking(), H.ctx{ settings = kat })
    assert.equal("flag", d.action)
  end)

  it("flags (through the runtime) an unknown zone", function()
    local d, kind = H.decide(P, moved_to("2026-11-27T09:00:00Z", "2026-11-27T10:00:00Z"),
      H.booking(), H.ctx{ settings = { zone = "Mars/Olympus" } })
    assert.equal("flag", d.action)
    assert.equal("runtime", kind)
    assert.matches("unknown time zone", d.reason)
  end)

  it("flags (through the runtime) a malformed setting", function()
    local d, kind = H.decide(P, moved_to("2026-11-27T09:00:00Z", "2026-11-27T10:00:00Z"),
      H.booking(), H.ctx{ settings = { work_start = "nine" } })
    assert.equal("flag", d.action)
    assert.equal("runtime", kind)
    assert.matches("work_start must be", d.reason)
  end)
end)

describe("policy: working_hours (on_delete)", function()
  it("cancels", function()
    local d = P.on_delete(H.change{ kind = "delete" }, H.booking(), H.ctx())
    assert.equal("cancel", d.action)
  end)
end)

describe("policy: working_hours (on_title_change)", function()
  it("ignores title changes", function()
    local d = P.on_title_change(H.change{ kind = "title_change" }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
  end)
end)

describe("policy: working_hours (on_past)", function()
  it("ignores anything past", function()
    local d = H.decide(P, H.change{ kind = "time_change", past = true }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
  end)
end)
