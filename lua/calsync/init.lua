-- The calsync module offered to policies (require "calsync").
local M = {}

return M
