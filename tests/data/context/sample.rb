require "json"
require_relative "lib/format"

module Library
  NOTICE = <<~TEXT
    Books are due in three weeks.
    Late returns cost a coin a day.
  TEXT

  class Book
    attr_reader :title, :author

    def initialize(title, author)
      @title = title
      @author = author
    end

    def to_s
      "#{title} by #{author}"
    end
  end

  class Shelf
    def initialize
      @books = []
    end

    def add(book)
      @books << book
      self
    end

    def by(author)
      @books.select { |b| b.author == author }
    end

    def to_json(*args)
      @books.map(&:to_s).to_json(*args)
    end
  end
end

def main
  shelf = Library::Shelf.new
  shelf.add(Library::Book.new("Dune", "Herbert"))
  puts shelf.to_json
end
