-- default -- what the booking app expects (DESIGN §5).
--
--   on_delete        cancel: the host deleted or declined the event
--   on_time_change   reschedule to the event's new start and end
--   on_title_change  ignore: the booking keeps the title the app gave it
--   on_past          ignore: a change to a booking that is over (or moved
--                    into the past) changes nothing
--   on_instance      (absent) an occurrence goes to the hook of its kind
--
-- ctx.settings: none (the empty schema: a calendar given any setting is
-- refused with 422, instead of a typo silently doing nothing).
return {
  settings = {},

  on_delete = function(change)
    if change.source == "full_sync" then
      return { action = "cancel", reason = "event no longer in Google Calendar" }
    end
    return { action = "cancel", reason = "event deleted in Google Calendar" }
  end,

  on_time_change = function(change)
    return { action = "reschedule",
             reason = "event moved to " .. change.new.start .. " in Google Calendar" }
  end,

  on_title_change = function()
    return { action = "ignore", reason = "title changes are not synced to bookings" }
  end,

  on_past = function()
    return { action = "ignore", reason = "booking is in the past" }
  end,
}
