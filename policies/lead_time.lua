-- lead_time -- never let a late change cancel or move a booking silently.
--
-- A deletion or a move that happens shortly before the booking starts is
-- often a mistake (or needs a human: a late cancellation fee, a no-show).
-- Inside the lead time the booking is flagged for review instead.
--
--   on_delete        cancel, unless the booking starts within the lead
--                    time: then flag
--   on_time_change   reschedule, unless the booking or its new time starts
--                    within the lead time: then flag
--   on_title_change  ignore
--   on_past          ignore
--
-- ctx.settings:
--   lead_time_hours  number, default 24: how close to the start a change
--                    is flagged instead of applied
local calsync = require "calsync"

local DEFAULT_HOURS = 24

local function lead_seconds(ctx)
  -- the schema below fills the default and the API refuses a bad value;
  -- still checked: settings stored before the schema existed
  local h = ctx.settings.lead_time_hours
  if h == nil then h = DEFAULT_HOURS end
  if type(h) ~= "number" or h < 0 then
    error("settings.lead_time_hours must be a number >= 0, got " .. tostring(h))
  end
  return h * calsync.HOUR, h
end

-- Seconds from now to the start of `span` (a booking or change.new).
local function until_start(span, ctx)
  return calsync.time(span.start) - ctx.now
end

return {
  settings = {
    lead_time_hours = { type = "number", default = DEFAULT_HOURS, min = 0 },
  },

  on_delete = function(change, booking, ctx)
    local lead, hours = lead_seconds(ctx)
    local left = until_start(booking, ctx)
    if left < lead then
      return { action = "flag",
               reason = string.format("event deleted %.1f h before the booking starts "
                 .. "(lead time %g h): review before cancelling", left / 3600, hours) }
    end
    return { action = "cancel", reason = "event deleted in Google Calendar" }
  end,

  on_time_change = function(change, booking, ctx)
    local lead, hours = lead_seconds(ctx)
    local left = math.min(until_start(booking, ctx), until_start(change.new, ctx))
    if left < lead then
      return { action = "flag",
               reason = string.format("event moved to %s within the lead time of %g h: "
                 .. "review before rescheduling", change.new.start, hours) }
    end
    return { action = "reschedule", reason = "event moved to " .. change.new.start }
  end,

  on_title_change = function()
    return { action = "ignore", reason = "title changes are not synced to bookings" }
  end,

  on_past = function()
    return { action = "ignore", reason = "booking is in the past" }
  end,
}
