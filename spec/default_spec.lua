local H = require "helpers"

local P = H.load("default")

describe("policy: default (on_delete)", function()
  it("cancels the booking when the event is deleted", function()
    local d = P.on_delete(H.change{ kind = "delete" }, H.booking(), H.ctx())
    assert.same({ action = "cancel", reason = "event deleted in Google Calendar" }, d)
  end)

  it("cancels when a full resync finds the event gone", function()
    local d = P.on_delete(H.change{ kind = "delete", source = "full_sync",
      event = { id = "ev-1", status = "cancelled" } }, H.booking(), H.ctx())
    assert.equal("cancel", d.action)
    assert.matches("no longer", d.reason)
  end)
end)

describe("policy: default (on_time_change)", function()
  it("reschedules to the new time", function()
    local d = P.on_time_change(H.change{ kind = "time_change" }, H.booking(), H.ctx())
    assert.equal("reschedule", d.action)
    assert.equal("event moved to 2026-11-27T10:00:00Z in Google Calendar", d.reason)
  end)
end)

describe("policy: default (on_title_change)", function()
  it("ignores title changes", function()
    local d = P.on_title_change(H.change{ kind = "title_change" }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
  end)
end)

describe("policy: default (on_past)", function()
  it("ignores anything past", function()
    local d = P.on_past(H.change{ kind = "delete", past = true }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
  end)

  it("is what the runtime dispatches a past change to", function()
    local d = H.decide(P, H.change{ kind = "time_change", past = true }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
    assert.equal("booking is in the past", d.reason)
  end)
end)

describe("policy: default (on_instance)", function()
  it("has no on_instance: an occurrence goes to its kind's hook", function()
    assert.is_nil(P.on_instance)
    local d = H.decide(P, H.change{ kind = "delete",
      instance = { series_id = "ser-1", original_start = "2026-11-26T10:00:00Z" } },
      H.booking(), H.ctx())
    assert.equal("cancel", d.action)
  end)
end)
