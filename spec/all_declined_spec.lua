local H = require "helpers"

local P = H.load("all_declined")

local function response(attendees)
  local b = H.booking()
  return H.change{ kind = "response",
    event = { id = "ev-1", status = "confirmed", summary = b.title,
      start = { dateTime = b.start }, ["end"] = { dateTime = b["end"] } },
    new = { start = b.start, ["end"] = b["end"], title = b.title, attendees = attendees } }
end

local function a(email, r) return { email = email, response = r } end

describe("policy: all_declined (on_response)", function()
  it("flags a booking whose attendees all declined", function()
    local d = P.on_response(response{ a("x@example.com", "declined"),
      a("y@example.com", "declined") }, H.booking(), H.ctx())
    assert.equal("flag", d.action)
    assert.equal("all 2 attendee(s) declined in Google Calendar", d.reason)
  end)

  it("ignores one decline among several, and acceptances", function()
    local d = P.on_response(response{ a("x@example.com", "declined"),
      a("y@example.com", "accepted") }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
    d = P.on_response(response{ a("x@example.com", "tentative") }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
    d = P.on_response(response{ a("x@example.com", "needsAction") }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
  end)

  it("ignores an event without attendees", function()
    assert.equal("ignore", P.on_response(response{}, H.booking(), H.ctx()).action)
    assert.equal("ignore", P.on_response(response(nil), H.booking(), H.ctx()).action)
  end)

  it("is what the runtime dispatches a response to", function()
    local d, kind = H.decide(P, response{ a("x@example.com", "declined") }, H.booking(),
      H.ctx())
    assert.is_nil(kind)
    assert.same({ action = "flag",
      reason = "all 1 attendee(s) declined in Google Calendar" }, d)
  end)
end)

describe("policy: all_declined (other hooks, as default)", function()
  it("cancels a deletion and reschedules a move", function()
    assert.equal("cancel", P.on_delete(H.change{ kind = "delete" }, H.booking(), H.ctx()).action)
    assert.equal("reschedule",
      P.on_time_change(H.change{ kind = "time_change" }, H.booking(), H.ctx()).action)
  end)
end)

describe("policy: default ignores responses", function()
  it("has no on_response: the runtime ignores the change", function()
    local D = H.load("default")
    assert.is_nil(D.on_response)
    local d = H.decide(D, response{ a("x@example.com", "declined") }, H.booking(), H.ctx())
    assert.equal("ignore", d.action)
  end)
end)
