local json = require("json")
local util = require("lib.util")

local M = {}

local HELP = [[
queue: a tiny FIFO
push, pop and size
]]

function M.new()
  return { first = 1, last = 0, items = {} }
end

function M.push(q, value)
  q.last = q.last + 1
  q.items[q.last] = value
end

function M.pop(q)
  if q.first > q.last then
    return nil
  end
  local value = q.items[q.first]
  q.items[q.first] = nil
  q.first = q.first + 1
  return value
end

local function size(q)
  return q.last - q.first + 1
end

function M.dump(q)
  return json.encode({ size = size(q), help = HELP, tag = util.tag() })
end

return M
