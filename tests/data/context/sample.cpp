#include <string>
#include <vector>

namespace text {

class Tokenizer {
public:
    explicit Tokenizer(std::string sep) : sep_(std::move(sep)) {}

    std::vector<std::string> split(const std::string &s) const {
        std::vector<std::string> out;
        size_t start = 0;
        for (size_t pos = s.find(sep_); pos != std::string::npos; pos = s.find(sep_, start)) {
            out.push_back(s.substr(start, pos - start));
            start = pos + sep_.size();
        }
        out.push_back(s.substr(start));
        return out;
    }

private:
    std::string sep_;
};

int count_words(const std::string &s) {
    Tokenizer t(" ");
    return static_cast<int>(t.split(s).size());
}

}  // namespace text
