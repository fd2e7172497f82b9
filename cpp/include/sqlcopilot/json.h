// A minimal JSON value, reader and writer: enough for the export manifest and the runner's request/response lines.
// Numbers are kept as double (exact for token ids and sizes below 2^53).
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sqlcopilot {

class JsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Json {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Json() = default;
  static Json parse(const std::string& text);  // throws JsonError naming the character offset

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  bool as_bool() const;
  double as_number() const;
  int64_t as_int() const;  // a number with no fractional part
  const std::string& as_string() const;
  const std::vector<Json>& as_array() const;
  const std::map<std::string, Json>& as_object() const;

  bool has(const std::string& key) const;
  const Json& at(const std::string& key) const;  // throws JsonError naming the missing key

  // Compact JSON text of this value (strings escaped, numbers printed exactly: integers, float32 and double values).
  std::string dump() const;

  static Json of_number(double value);
  static Json of_string(std::string value);
  static Json of_bool(bool value);
  static Json of_array(std::vector<Json> items);
  static Json of_object(std::map<std::string, Json> members);

 private:
  friend class JsonParser;
  Type type_ = Type::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Json> array_;
  std::map<std::string, Json> object_;
};

std::string json_escape(const std::string& text);  // the quoted JSON string literal of `text`

}  // namespace sqlcopilot
