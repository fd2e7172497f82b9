#include "sqlcopilot/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace sqlcopilot {

namespace {
const char* type_name(Json::Type type) {
  static const char* names[] = {"null", "bool", "number", "string", "array", "object"};
  return names[static_cast<int>(type)];
}
}  // namespace

// Recursive descent over the text; depth is bounded so a hostile line cannot overflow the stack.
class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : text_(text) {}

  Json parse_document() {
    Json value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("unexpected trailing characters");
    return value;
  }

 private:
  const std::string& text_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw JsonError("invalid JSON at character " + std::to_string(pos_) + ": " + what);
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r'))
      ++pos_;
  }
  char peek() {
    skip_space();
    if (pos_ >= text_.size()) fail("unexpected end of text");
    return text_[pos_];
  }
  void expect_word(const char* word) {
    for (const char* c = word; *c; ++c, ++pos_)
      if (pos_ >= text_.size() || text_[pos_] != *c) fail(std::string("expected '") + word + "'");
  }

  Json parse_value(int depth) {
    if (depth > 64) fail("nesting deeper than 64");
    Json value;
    char c = peek();
    if (c == '{') {
      value.type_ = Json::Type::Object;
      ++pos_;
      if (peek() == '}') { ++pos_; return value; }
      while (true) {
        if (peek() != '"') fail("expected a string key");
        std::string key = parse_string();
        if (peek() != ':') fail("expected ':'");
        ++pos_;
        value.object_[key] = parse_value(depth + 1);
        char next = peek();
        ++pos_;
        if (next == '}') return value;
        if (next != ',') fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      value.type_ = Json::Type::Array;
      ++pos_;
      if (peek() == ']') { ++pos_; return value; }
      while (true) {
        value.array_.push_back(parse_value(depth + 1));
        char next = peek();
        ++pos_;
        if (next == ']') return value;
        if (next != ',') fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      value.type_ = Json::Type::String;
      value.string_ = parse_string();
      return value;
    }
    if (c == 't') { expect_word("true"); value.type_ = Json::Type::Bool; value.bool_ = true; return value; }
    if (c == 'f') { expect_word("false"); value.type_ = Json::Type::Bool; return value; }
    if (c == 'n') { expect_word("null"); return value; }
    if (c == '-' || (c >= '0' && c <= '9')) {
      const char* start = text_.c_str() + pos_;
      char* end = nullptr;
      value.type_ = Json::Type::Number;
      value.number_ = std::strtod(start, &end);
      if (end == start) fail("bad number");
      pos_ += static_cast<size_t>(end - start);
      return value;
    }
    fail(std::string("unexpected character '") + c + "'");
  }

  void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  unsigned parse_hex4() {
    if (pos_ + 4 > text_.size()) fail("short \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      char h = text_[pos_++];
      code <<= 4;
      if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
      else fail("bad \\u escape");
    }
    return code;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c != '\\') { out += c; continue; }
      if (pos_ >= text_.size()) fail("unterminated escape");
      char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = parse_hex4();
          if (code >= 0xD800 && code < 0xDC00 && pos_ + 6 <= text_.size() && text_[pos_] == '\\' &&
              text_[pos_ + 1] == 'u') {
            pos_ += 2;
            unsigned low = parse_hex4();
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default: fail(std::string("bad escape '\\") + e + "'");
      }
    }
  }
};

Json Json::parse(const std::string& text) { return JsonParser(text).parse_document(); }

#define SQLCOPILOT_EXPECT(kind)                                                                           \
  if (type_ != Type::kind)                                                                                \
    throw JsonError(std::string("expected a JSON ") + type_name(Type::kind) + ", got " + type_name(type_));

bool Json::as_bool() const { SQLCOPILOT_EXPECT(Bool) return bool_; }
double Json::as_number() const { SQLCOPILOT_EXPECT(Number) return number_; }
const std::string& Json::as_string() const { SQLCOPILOT_EXPECT(String) return string_; }
const std::vector<Json>& Json::as_array() const { SQLCOPILOT_EXPECT(Array) return array_; }
const std::map<std::string, Json>& Json::as_object() const { SQLCOPILOT_EXPECT(Object) return object_; }
#undef SQLCOPILOT_EXPECT

int64_t Json::as_int() const {
  double value = as_number();
  if (std::floor(value) != value || std::fabs(value) > 9007199254740992.0)
    throw JsonError("expected an integer, got " + std::to_string(value));
  return static_cast<int64_t>(value);
}

bool Json::has(const std::string& key) const { return type_ == Type::Object && object_.count(key) > 0; }

const Json& Json::at(const std::string& key) const {
  const auto& members = as_object();
  auto found = members.find(key);
  if (found == members.end()) throw JsonError("missing field '" + key + "'");
  return found->second;
}

std::string json_escape(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string Json::dump() const {
  switch (type_) {
    case Type::Null: return "null";
    case Type::Bool: return bool_ ? "true" : "false";
    case Type::Number: {
      if (!std::isfinite(number_)) return "null";
      char buffer[32];
      if (std::floor(number_) == number_ && std::fabs(number_) < 1e15)
        std::snprintf(buffer, sizeof buffer, "%.0f", number_);
      else if (static_cast<double>(static_cast<float>(number_)) == number_)
        std::snprintf(buffer, sizeof buffer, "%.9g", number_);  // enough digits to round-trip a float32
      else
        std::snprintf(buffer, sizeof buffer, "%.17g", number_);  // and a double (beam scores)
      return buffer;
    }
    case Type::String: return json_escape(string_);
    case Type::Array: {
      std::string out = "[";
      for (size_t i = 0; i < array_.size(); ++i) out += (i ? "," : "") + array_[i].dump();
      return out + "]";
    }
    case Type::Object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [key, value] : object_) {
        out += (first ? "" : ",") + json_escape(key) + ":" + value.dump();
        first = false;
      }
      return out + "}";
    }
  }
  return "null";
}

Json Json::of_number(double value) { Json j; j.type_ = Type::Number; j.number_ = value; return j; }
Json Json::of_string(std::string value) { Json j; j.type_ = Type::String; j.string_ = std::move(value); return j; }
Json Json::of_bool(bool value) { Json j; j.type_ = Type::Bool; j.bool_ = value; return j; }
Json Json::of_array(std::vector<Json> items) { Json j; j.type_ = Type::Array; j.array_ = std::move(items); return j; }
Json Json::of_object(std::map<std::string, Json> members) {
  Json j;
  j.type_ = Type::Object;
  j.object_ = std::move(members);
  return j;
}

}  // namespace sqlcopilot
