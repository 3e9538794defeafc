-- Text as Neovim draws and indexes it, for ghost text (diffgemma) and next-edit suggestions
-- (diffgemma.next_edit) alike.

local M = {}

-- What a line of virtual text looks like on screen: tabs as spaces (virtual text does not expand
-- them) and control characters as ^X, as Neovim shows them in the buffer.
function M.display(line, bufnr)
  local spaces = string.rep(" ", vim.bo[bufnr].tabstop)
  return vim.fn.strtrans((line:gsub("\t", spaces)))
end

-- byte column of an LSP character index on `line`
function M.byte_col(line, character, encoding)
  if encoding == "utf-8" then
    return math.min(character, #line)
  end
  local ok, col = pcall(vim.str_byteindex, line, character, encoding == "utf-16")
  return ok and col or #line
end

return M
