local H = require "helpers"

local P = H.load("lead_time")
local T = H.calsync.time

-- the default booking starts 2026-11-26T10:00:00Z
local far = T("2026-11-24T09:00:00Z")   -- 49 h before
local near = T("2026-11-26T00:00:00Z")  -- 10 h before

describe("policy: lead_time (on_delete)", function()
  it("cancels a deletion made well before the start", function()
    local d = P.on_delete(H.change{ kind = "delete" }, H.booking(), H.ctx{ now = far })
    assert.same({ action = "cancel", reason = "event deleted in Google Calendar" }, d)
  end)

  it("flags a deletion inside the default 24 h lead time", function()
    local d = P.on_delete(H.change{ kind = "delete" }, H.booking(), H.ctx{ now = near })
    assert.equal("flag", d.action)
    assert.matches("10.0 h before the booking starts %(lead time 24 h%)", d.reason)
  end)

  it("reads the lead time from ctx.settings.lead_time_hours", function()
    local d = P.on_delete(H.change{ kind = "delete" }, H.booking(),
      H.ctx{ now = near, settings = { lead_time_hours = 6 } })
    assert.equal("cancel", d.action)
    d = P.on_delete(H.change{ kind = "delete" }, H.booking(),
      H.ctx{ now = far, settings = { lead_time_hours = 72 } })
    assert.equal("flag", d.action)
  end)

  it("flags (through the runtime) when the setting is not a number", function()
    local d, kind = H.decide(P, H.change{ kind = "delete" }, H.booking(),
      H.ctx{ settings = { lead_time_hours = "soon" } })
    assert.equal("flag", d.action)
    assert.equal("runtime", kind)
    assert.matches("lead_time_hours must be a number", d.reason)
  end)
end)

describe("policy: lead_time (on_time_change)", function()
  it("reschedules a move made well before both times", function()
    local d = P.on_time_change(H.change{ kind = "time_change" }, H.booking(), H.ctx{ now = far })
    assert.equal("reschedule", d.action)
  end)

  it("flags a move of a booking that starts within the lead time", function()
    local d = P.on_time_change(H.change{ kind = "time_change" }, H.booking(), H.ctx{ now = near })
    assert.equal("flag", d.action)
  end)

  it("flags a move to a time within the lead time", function()
    local c = H.change{ kind = "time_change",
      new = { start = "2026-11-24T12:00:00Z", ["end"] = "2026-11-24T12:30:00Z", title = "Intro call" } }
    local d = P.on_time_change(c, H.booking(), H.ctx{ now = far })
    assert.equal("flag", d.action)
    assert.matches("2026%-11%-24T12:00:00Z", d.reason)
  end)
end)

describe("policy: lead_time (on_title_change)", function()
  it("ignores title changes", function()
    local d = P.on_title_change(H.change{ kind = "title_change" }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
  end)
end)

describe("policy: lead_time (on_past)", function()
  it("ignores anything past", function()
    local d = H.decide(P, H.change{ kind = "delete", past = true }, H.booking(), H.ctx())
    assert.same({ action = "ignore", reason = "booking is in the past" }, d)
  end)
end)
