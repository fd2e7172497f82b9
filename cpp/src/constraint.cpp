// The schema constraint (sqlcopilot/constraint.h): sqlcopilot_core/sqlconstraint.py, function for function.
// Python's `replace(state, ...)` becomes an in-place change of the caller's copy; `None` becomes `false`.
#include "sqlcopilot/constraint.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "sqlcopilot/json.h"

namespace sqlcopilot {
namespace {

struct CodeRange {
  uint32_t first, last;
};
struct LowerCase {
  uint32_t cp;
  const char* utf8;
};
#include "unicode_tables.h"

enum CharClass : uint8_t { kAlnumChar = 1, kSpaceChar = 2, kDigitChar = 4, kDecimalChar = 8, kPunctChar = 16 };

template <size_t N>
bool in_ranges(const CodeRange (&ranges)[N], uint32_t cp) {
  const CodeRange* end = ranges + N;
  const CodeRange* at = std::upper_bound(ranges, end, cp, [](uint32_t c, const CodeRange& r) { return c < r.first; });
  return at != ranges && cp <= (at - 1)->last;
}

uint8_t classify_slow(uint32_t cp) {
  uint8_t flags = 0;
  if (in_ranges(kAlnum, cp)) flags |= kAlnumChar;
  if (in_ranges(kSpace, cp)) flags |= kSpaceChar;
  if (in_ranges(kDigit, cp)) flags |= kDigitChar;
  if (in_ranges(kDecimal, cp)) flags |= kDecimalChar;
  return flags;
}

struct AsciiTable {
  uint8_t flags[128];
  AsciiTable() {
    const std::string punctuation = ".,;()*=<>!+-/%|&~'\"`[]";  // sqlconstraint.SQL_PUNCTUATION
    for (uint32_t c = 0; c < 128; ++c) {
      flags[c] = classify_slow(c);
      if (punctuation.find(static_cast<char>(c)) != std::string::npos) flags[c] |= kPunctChar;
    }
  }
};
const AsciiTable kAscii;

inline uint8_t classify(uint32_t cp) { return cp < 128 ? kAscii.flags[cp] : classify_slow(cp); }

// One code point of UTF-8 at p (p < end): its length in bytes. Invalid bytes are one U+FFFD each (no class, like
// Python's replacement character); surrogates (a JSON "\ud800" alone) decode as themselves (no class either).
inline size_t decode(const char* p, const char* end, uint32_t& cp) {
  const auto b0 = static_cast<unsigned char>(*p);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  auto cont = [&](size_t i) {
    return p + i < end && (static_cast<unsigned char>(p[i]) & 0xC0) == 0x80;
  };
  auto bits = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i]) & 0x3F); };
  if (b0 >= 0xC2 && b0 <= 0xDF && cont(1)) {
    cp = ((b0 & 0x1Fu) << 6) | bits(1);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF && cont(1) && cont(2)) {
    cp = ((b0 & 0x0Fu) << 12) | (bits(1) << 6) | bits(2);
    if (cp >= 0x800) return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    cp = ((b0 & 0x07u) << 18) | (bits(1) << 12) | (bits(2) << 6) | bits(3);
    if (cp >= 0x10000 && cp < 0x110000) return 4;
  }
  cp = 0xFFFD;
  return 1;
}

inline uint32_t first_code_point(const std::string& text) {
  uint32_t cp = 0;
  if (!text.empty()) decode(text.data(), text.data() + text.size(), cp);
  return cp;
}

// word[:1].isdigit()
inline bool starts_with_digit(const std::string& word) {
  if (word.empty()) return false;
  const auto b0 = static_cast<unsigned char>(word[0]);
  if (b0 < 0x80) return b0 >= '0' && b0 <= '9';
  return classify(first_code_point(word)) & kDigitChar;
}

// Appends str.lower() of one character (`bytes`, `length`: its UTF-8) to `out`.
inline void append_lower(std::string& out, uint32_t cp, const char* bytes, size_t length) {
  if (cp < 128) {
    out += static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  const LowerCase* end = kLower + sizeof kLower / sizeof kLower[0];
  const LowerCase* at = std::lower_bound(kLower, end, cp, [](const LowerCase& l, uint32_t c) { return l.cp < c; });
  if (at != end && at->cp == cp) out += at->utf8;
  else out.append(bytes, length);
}

std::string lower(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    uint32_t cp;
    size_t n = decode(p, end, cp);
    append_lower(out, cp, p, n);
    p += n;
  }
  return out;
}

// SHORT_ALIAS.fullmatch(word): [a-z]{1,2}\d*  (\d: Unicode decimal digits, as re matches them in a str pattern)
bool short_alias(const std::string& word) {
  size_t letters = 0;
  while (letters < word.size() && letters < 2 && word[letters] >= 'a' && word[letters] <= 'z') ++letters;
  if (letters == 0) return false;
  const char* p = word.data() + letters;
  const char* end = word.data() + word.size();
  while (p < end) {
    uint32_t cp;
    p += decode(p, end, cp);
    if (!(classify(cp) & kDecimalChar)) return false;
  }
  return true;
}

bool has_prefix(const std::vector<std::string>& names, const std::string& prefix) {
  auto at = std::lower_bound(names.begin(), names.end(), prefix);
  return at != names.end() && at->compare(0, prefix.size(), prefix) == 0;
}

bool contains(const std::vector<std::string>& names, const std::string& word) {
  auto at = std::lower_bound(names.begin(), names.end(), word);
  return at != names.end() && *at == word;
}

// Clause codes (State::clauses) and keyword actions.
enum Clause : char {
  kNoClause = 0, kFrom = 1, kSelect, kWhere, kGroup, kOrder, kHaving, kLimit, kOn, kUnion, kIntersect, kExcept, kBy,
  kOffset
};
enum Action : int { kNotKeyword = -1, kPlain = 0, kJoin = 100, kAs = 101 };  // 1..13: a Clause

// sqlconstraint.FUNCTIONS; KEYWORDS are kKeywordText's words and these
const char* const kFunctionText =
    "count sum avg min max total group_concat abs round length lower upper substr substring instr trim ltrim replace "
    "coalesce ifnull nullif iif typeof printf format char hex unicode random date time datetime julianday strftime "
    "unixepoch quote zeroblob likely unlikely";
const char* const kKeywordText =
    "select from where group by order having limit offset join inner left right full outer cross natural on using as "
    "and or not in like glob regexp match between is isnull notnull null distinct all union intersect except exists "
    "case when then else end asc desc with recursive values collate nocase binary rtrim escape cast true false "
    "current_date current_time current_timestamp over partition rows range filter window integer int real text "
    "numeric float double varchar";

std::set<std::string> words_of(const char* text) {
  std::set<std::string> out;
  std::istringstream words(text);
  for (std::string word; words >> word;) out.insert(word);
  return out;
}

bool is_function(const std::string& word) {
  static const std::set<std::string> functions = words_of(kFunctionText);
  return functions.count(word) > 0;
}

// sqlconstraint.AGGREGATES: refused in WHERE and ON (misuse of aggregate)
bool is_aggregate(const std::string& word) {
  static const std::set<std::string> aggregates = words_of("count sum avg total group_concat");
  return aggregates.count(word) > 0;
}

const std::vector<std::pair<std::string, int>>& keyword_table() {
  static const std::vector<std::pair<std::string, int>> table = [] {
    const std::map<std::string, int> actions = {
        {"from", kFrom}, {"join", kJoin}, {"as", kAs}, {"union", kUnion}, {"intersect", kIntersect},
        {"except", kExcept}, {"select", kSelect}, {"where", kWhere}, {"group", kGroup}, {"order", kOrder},
        {"having", kHaving}, {"limit", kLimit}, {"on", kOn}, {"by", kBy}, {"offset", kOffset}};
    std::vector<std::pair<std::string, int>> out;
    for (const char* text : {kKeywordText, kFunctionText}) {
      for (const std::string& word : words_of(text)) {
        auto action = actions.find(word);
        out.emplace_back(word, action == actions.end() ? kPlain : action->second);
      }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }();
  return table;
}

// Clause order within one query (sqlconstraint.CLAUSE_RANKS): a clause word may come only while the query's rank is
// in [low, high]; it sets the rank. Rank 0: no clause yet (start, after `(` or a set operator).
struct ClauseRank {
  int low, high, rank;
};

inline const ClauseRank* clause_rank(int action) {
  static const ClauseRank kSelectRank{0, 0, 1}, kFromRank{1, 1, 2}, kJoinRank{2, 2, 2}, kWhereRank{1, 2, 3},
      kGroupRank{1, 3, 4}, kHavingRank{1, 4, 5}, kOrderRank{1, 5, 6}, kLimitRank{1, 6, 7}, kOffsetRank{7, 7, 8},
      kSetRank{1, 5, 0};
  switch (action) {
    case kSelect: return &kSelectRank;
    case kFrom: return &kFromRank;
    case kJoin: case kOn: return &kJoinRank;
    case kWhere: return &kWhereRank;
    case kGroup: return &kGroupRank;
    case kHaving: return &kHavingRank;
    case kOrder: return &kOrderRank;
    case kLimit: return &kLimitRank;
    case kOffset: return &kOffsetRank;
    case kUnion: case kIntersect: case kExcept: return &kSetRank;
    default: return nullptr;
  }
}

constexpr int kFreeRank = 99;      // sqlconstraint.FREE_RANK: a depth that is not a query keeps no clause order

// sqlconstraint.OPERAND_ENDS: what ended last ends an operand
inline bool operand_end(uint8_t last) {
  return last == SchemaConstraint::kLastNumber || last == SchemaConstraint::kLastString ||
         last == SchemaConstraint::kLastName || last == SchemaConstraint::kLastAlias ||
         last == SchemaConstraint::kLastClose;
}

// SchemaConstraint._may_follow: a name or string may start here (not right after an operand, unless it is an alias:
// in the select list or the FROM clause, sqlconstraint.ALIAS_CLAUSES)
inline bool may_follow(const SchemaConstraint::State& s) {
  return !operand_end(s.last) || s.clauses.back() == kSelect || s.clauses.back() == kFrom;
}
constexpr size_t kMaxNumber = 24;  // sqlconstraint.MAX_NUMBER, in characters
constexpr int32_t kMaxDepth = 6;   // sqlconstraint.MAX_DEPTH
constexpr int32_t kMaxString = 100;  // sqlconstraint.MAX_STRING, in characters
constexpr int32_t kMaxSpace = 8;     // sqlconstraint.MAX_SPACE, whitespace characters in a row
constexpr size_t kMaxTables = 6;     // sqlconstraint.MAX_TABLES, tables a query part reads

// sqlconstraint.LIMIT_CLAUSES
inline bool limit_clause(char clause) { return clause == kLimit || clause == kOffset; }

// Characters (code points) of a UTF-8 string: what Python's len() counts.
inline size_t code_points(const std::string& text) {
  size_t count = 0;
  for (unsigned char byte : text) count += (byte & 0xC0) != 0x80;
  return count;
}

inline int keyword_action(const std::string& word) {
  const auto& table = keyword_table();
  auto at = std::lower_bound(table.begin(), table.end(), word,
                             [](const std::pair<std::string, int>& k, const std::string& w) { return k.first < w; });
  return at != table.end() && at->first == word ? at->second : kNotKeyword;
}

inline size_t mix(size_t seed, size_t value) {
  return seed ^ (value + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2));
}

const SchemaConstraint::Scope kEmptyScope;

// A state's scope, the empty one when it has none.
inline const SchemaConstraint::Scope& scope_of(const SchemaConstraint::State& s) {
  return s.scope ? *s.scope : kEmptyScope;
}

std::shared_ptr<const SchemaConstraint::Scope> make_scope(SchemaConstraint::Scope scope) {
  if (scope.empty()) return nullptr;
  std::hash<std::string> text_hash;
  size_t hash = mix(mix(scope.aliases.size(), scope.names.size()), scope.refs.size());
  for (const auto& a : scope.aliases) hash = mix(mix(mix(hash, static_cast<size_t>(a.depth)), text_hash(a.name)),
                                                 static_cast<size_t>(a.table + 1));
  for (const auto& n : scope.names) hash = mix(hash, text_hash(n));
  for (int32_t t : scope.named) hash = mix(hash, static_cast<size_t>(t + 1));
  for (const auto& [alias, table] : scope.defined)
    hash = mix(mix(hash, text_hash(alias)), static_cast<size_t>(table + 1));
  for (const auto& b : scope.bare) hash = mix(hash, text_hash(b));
  for (const auto& [q, column] : scope.refs) hash = mix(mix(hash, text_hash(q)), text_hash(column));
  for (const auto& part : scope.parts) {
    hash = mix(hash, part.size());
    for (int32_t t : part) hash = mix(hash, static_cast<size_t>(t + 2));
  }
  for (const auto& p : scope.pending)
    hash = mix(mix(mix(hash, static_cast<size_t>(p.depth)), text_hash(p.qualifier)), text_hash(p.column));
  scope.hash = hash;
  return std::make_shared<const SchemaConstraint::Scope>(std::move(scope));
}

// Python's replace(state, field=...) for the scope's fields: a changed copy of the state's scope.
template <typename Edit>
void edit_scope(SchemaConstraint::State& s, Edit edit) {
  SchemaConstraint::Scope scope = scope_of(s);
  edit(scope);
  s.scope = make_scope(std::move(scope));
}

const std::vector<int32_t> kNoTables;

// parts[depth] (none past the end)
inline const std::vector<int32_t>& part_of(const SchemaConstraint::State& s, int32_t depth) {
  const auto& parts = scope_of(s).parts;
  return static_cast<size_t>(depth) < parts.size() ? parts[static_cast<size_t>(depth)] : kNoTables;
}

// The part at `depth` reads `table` (kSubquery: a subquery).
inline void add_to_part(SchemaConstraint::Scope& scope, int32_t depth, int32_t table) {
  if (scope.parts.size() <= static_cast<size_t>(depth)) scope.parts.resize(static_cast<size_t>(depth) + 1);
  scope.parts[static_cast<size_t>(depth)].push_back(table);
}

// The part at the state's depth is over (a set operator, its `)`): it reads no table any more.
void clear_part(SchemaConstraint::State& s) {
  if (part_of(s, s.depth).empty()) return;
  const auto depth = static_cast<size_t>(s.depth);
  edit_scope(s, [depth](SchemaConstraint::Scope& scope) {
    scope.parts[depth].clear();
    while (!scope.parts.empty() && scope.parts.back().empty()) scope.parts.pop_back();
  });
}

void add_name(SchemaConstraint::State& s, std::string name) {
  edit_scope(s, [&](SchemaConstraint::Scope& scope) { scope.names.push_back(std::move(name)); });
}

// aliases = tuple(a for a in state.aliases if a[0] < state.depth)
void drop_inner_aliases(SchemaConstraint::State& s) {
  const auto& aliases = s.aliases();
  if (std::none_of(aliases.begin(), aliases.end(), [&](const auto& a) { return a.depth >= s.depth; })) return;
  const int32_t depth = s.depth;
  edit_scope(s, [depth](SchemaConstraint::Scope& scope) {
    std::vector<SchemaConstraint::Alias> kept;
    for (const auto& a : scope.aliases)
      if (a.depth < depth) kept.push_back(a);
    scope.aliases = std::move(kept);
  });
}

bool has_alias(const SchemaConstraint::State& s, const std::string& word) {
  for (const auto& a : s.aliases())
    if (a.name == word) return true;
  return false;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

// --- vocabulary ------------------------------------------------------------------------------------------------

ConstraintVocabulary::ConstraintVocabulary(std::vector<std::string> token_texts, int64_t eos_id,
                                           const std::vector<int64_t>& stop_ids,
                                           const std::vector<int64_t>& banned_ids)
    : texts_(std::move(token_texts)), eos_id_(eos_id), banned_(texts_.size(), 0), cut_(texts_.size(), -1) {
  for (int64_t id : banned_ids)
    if (id >= 0 && id < size()) banned_[static_cast<size_t>(id)] = 1;
  for (int64_t id : stop_ids) {
    if (id < 0 || id >= size()) continue;
    const std::string& text = texts_[static_cast<size_t>(id)];
    size_t semicolon = text.find(';'), blank = text.find("\n\n");
    size_t cut = std::min(semicolon, blank);
    if (cut != std::string::npos) cut_[static_cast<size_t>(id)] = static_cast<int32_t>(cut);
  }
}

std::vector<int64_t> ConstraintVocabulary::statement_end_ids(const std::vector<std::string>& token_texts) {
  std::vector<int64_t> ids;
  for (size_t i = 0; i < token_texts.size(); ++i)
    if (token_texts[i].find(';') != std::string::npos || token_texts[i].find("\n\n") != std::string::npos)
      ids.push_back(static_cast<int64_t>(i));
  return ids;
}

std::shared_ptr<const ConstraintVocabulary> ConstraintVocabulary::load(const std::filesystem::path& export_dir) {
  const Json texts_json = Json::parse(read_file(export_dir / "token_texts.json"));
  const Json manifest = Json::parse(read_file(export_dir / "manifest.json"));
  std::vector<std::string> texts;
  texts.reserve(texts_json.as_array().size());
  for (const Json& text : texts_json.as_array()) texts.push_back(text.as_string());
  const int64_t eos = manifest.has("eos_token_id") ? manifest.at("eos_token_id").as_int() : -1;
  std::vector<int64_t> banned;
  if (manifest.has("special_token_ids"))
    for (const Json& id : manifest.at("special_token_ids").as_array())
      if (id.as_int() != eos) banned.push_back(id.as_int());
  // "stop_token_ids" (format 3) is generate.statement_end_ids, which statement_end_ids computes from the texts
  std::vector<int64_t> stops;
  if (manifest.has("stop_token_ids"))
    for (const Json& id : manifest.at("stop_token_ids").as_array()) stops.push_back(id.as_int());
  else
    stops = statement_end_ids(texts);
  return std::make_shared<ConstraintVocabulary>(std::move(texts), eos, stops, banned);
}

// --- state -----------------------------------------------------------------------------------------------------

const std::vector<SchemaConstraint::Alias>& SchemaConstraint::State::aliases() const {
  return scope_of(*this).aliases;
}

const std::vector<std::string>& SchemaConstraint::State::names() const { return scope_of(*this).names; }

bool SchemaConstraint::State::operator==(const State& o) const {
  if (mode != o.mode || quoted != o.quoted || context != o.context || newline != o.newline || ended != o.ended ||
      last != o.last || depth != o.depth || spaces != o.spaces ||
      words != o.words || table != o.table || word != o.word || qualifier != o.qualifier || clauses != o.clauses ||
      ranks != o.ranks)
    return false;
  if (scope == o.scope) return true;
  return scope_of(*this) == scope_of(o);
}

size_t SchemaConstraint::State::hash() const {
  std::hash<std::string> text_hash;
  size_t h = static_cast<size_t>(mode) | static_cast<size_t>(context) << 8 | static_cast<size_t>(newline) << 16 |
              static_cast<size_t>(ended) << 17 | static_cast<size_t>(last) << 24;
  h = mix(h, static_cast<size_t>(depth));
  h = mix(h, static_cast<size_t>(quoted));
  h = mix(h, static_cast<size_t>(spaces));
  h = mix(h, static_cast<size_t>(words));
  h = mix(h, static_cast<size_t>(table + 1));
  h = mix(h, text_hash(word));
  h = mix(h, text_hash(qualifier));
  h = mix(h, text_hash(clauses));
  h = mix(h, text_hash(ranks));
  return mix(h, scope ? scope->hash : 0);
}

size_t SchemaConstraint::KeyHash::operator()(const Key& key) const {
  return mix(key.state.hash(), static_cast<size_t>(key.token));
}

// --- constraint ------------------------------------------------------------------------------------------------

SchemaConstraint::SchemaConstraint(const SchemaTables& tables, std::shared_ptr<const ConstraintVocabulary> vocab)
    : vocab_(std::move(vocab)) {
  if (!vocab_) throw std::invalid_argument("SchemaConstraint: no vocabulary");
  std::map<std::string, std::vector<std::string>> lowered;
  for (const auto& [table, columns] : tables) {
    std::vector<std::string> names;
    for (const auto& column : columns) names.push_back(lower(column));
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    lowered[lower(table)] = std::move(names);
  }
  for (auto& [table, columns] : lowered) {
    tables_.push_back(table);
    all_columns_.insert(all_columns_.end(), columns.begin(), columns.end());
    columns_.push_back(std::move(columns));
  }
  std::sort(all_columns_.begin(), all_columns_.end());
  all_columns_.erase(std::unique(all_columns_.begin(), all_columns_.end()), all_columns_.end());
  bare_ = all_columns_;
  bare_.insert(bare_.end(), tables_.begin(), tables_.end());
  for (const auto& keyword : keyword_table()) bare_.push_back(keyword.first);
  std::sort(bare_.begin(), bare_.end());
  bare_.erase(std::unique(bare_.begin(), bare_.end()), bare_.end());
}

SchemaConstraint::SchemaConstraint(const Json& spec, std::shared_ptr<const ConstraintVocabulary> vocab)
    : SchemaConstraint(tables_from_spec(spec), std::move(vocab)) {}

SchemaTables SchemaConstraint::tables_from_spec(const Json& spec) {
  SchemaTables tables;
  for (const auto& [table, columns] : spec.at("tables").as_object()) {
    auto& names = tables[table];
    for (const Json& column : columns.as_array()) names.push_back(column.as_string());
  }
  return tables;
}

std::vector<std::string> SchemaConstraint::keywords() {
  std::vector<std::string> out;
  for (const auto& keyword : keyword_table()) out.push_back(keyword.first);
  return out;
}

int32_t SchemaConstraint::find_table(const std::string& name) const {
  auto at = std::lower_bound(tables_.begin(), tables_.end(), name);
  return at != tables_.end() && *at == name ? static_cast<int32_t>(at - tables_.begin()) : -1;
}

std::optional<SchemaConstraint::State> SchemaConstraint::advance(const State& state, int64_t token) {
  if (cache_limit_ == 0) return advance_uncached(state, token);
  Key key{state, token};
  auto found = cache_.find(key);
  if (found != cache_.end()) return found->second;
  std::optional<State> result = advance_uncached(state, token);
  if (cache_.size() >= cache_limit_) cache_.clear();
  cache_.emplace(std::move(key), result);
  return result;
}

std::optional<SchemaConstraint::State> SchemaConstraint::advance_uncached(const State& state, int64_t token) const {
  if (state.ended) return state;
  State s = state;
  if (vocab_->eos_id_ >= 0 && token == vocab_->eos_id_) {
    if (!end_statement(s)) return std::nullopt;
    return s;
  }
  if (token < 0 || token >= vocab_->size() || vocab_->banned_[static_cast<size_t>(token)]) return std::nullopt;
  const std::string& text = vocab_->texts_[static_cast<size_t>(token)];
  const int32_t cut = vocab_->cut_[static_cast<size_t>(token)];
  if (cut >= 0) {
    if (!feed_bytes(s, text.data(), text.data() + cut) || !end_statement(s)) return std::nullopt;
    return s;
  }
  if (!feed_bytes(s, text.data(), text.data() + text.size())) return std::nullopt;
  return s;
}

bool SchemaConstraint::accepts(const std::string& text) const { return feed(start(), text).has_value(); }

std::optional<SchemaConstraint::State> SchemaConstraint::feed(const State& state, const std::string& text) const {
  State s = state;
  if (!feed_bytes(s, text.data(), text.data() + text.size())) return std::nullopt;
  return s;
}

// --- characters ------------------------------------------------------------------------------------------------

bool SchemaConstraint::feed_bytes(State& s, const char* p, const char* end) const {
  while (p < end) {
    if (s.ended) return true;
    uint32_t cp;
    const size_t length = decode(p, end, cp);
    if (s.newline && (cp == '\n' || cp == '-')) {  // a blank line or a comment line: where extract_sql cuts
      s.newline = false;
      return end_statement(s);
    }
    if (!feed_char(s, cp, p, length)) return false;
    s.newline = cp == '\n' && s.mode == 0;
    if (s.mode == 0 && (classify(cp) & kSpaceChar)) {
      if (++s.spaces > kMaxSpace) return false;
    } else {
      s.spaces = 0;
    }
    p += length;
  }
  if (s.mode == 0 && !s.word.empty() && !partial_ok(s)) return false;
  return true;
}

bool SchemaConstraint::feed_char(State& s, uint32_t cp, const char* bytes, size_t length) const {
  if (s.mode) {
    static const uint32_t closing[] = {0, '\'', '"', '`', ']'};
    if (cp == closing[s.mode]) {
      s.mode = 0;
      ++s.words;
      s.last = kLastString;
      s.quoted = 0;
      return true;
    }
    if (s.quoted >= kMaxString) return false;
    ++s.quoted;
    return true;
  }
  const uint8_t flags = classify(cp);
  if ((flags & kAlnumChar) || cp == '_' || (cp == '.' && starts_with_digit(s.word))) {
    if (starts_with_digit(s.word) && code_points(s.word) >= kMaxNumber) return false;
    append_lower(s.word, cp, bytes, length);
    return true;
  }
  if (!s.word.empty() && !complete(s, cp)) return false;
  if (flags & kSpaceChar) return true;
  if (!(flags & kPunctChar)) return false;
  if (s.context == kTable && cp != '(') return false;
  const char clause = s.clauses.back();
  if (limit_clause(clause) && !(cp == ')' || cp == ';' || (cp == ',' && s.last == kLastNumber && clause == kLimit)))
    return false;  // LIMIT n [OFFSET m | , m]
  switch (cp) {
    case '.':
      return true;  // complete made the word a qualifier
    case '\'': case '"': case '`': case '[':
      if (!may_follow(s)) return false;
      s.mode = cp == '\'' ? 1 : cp == '"' ? 2 : cp == '`' ? 3 : 4;
      s.context = kNone;
      return true;
    case '(':
      if (s.last == kLastNumber || s.last == kLastString || s.last == kLastClose || s.depth >= kMaxDepth)
        return false;
      if (clause == kFrom) {
        const int32_t depth = s.depth;
        if (part_of(s, depth).size() >= kMaxTables) return false;
        edit_scope(s, [depth](Scope& scope) { add_to_part(scope, depth, kSubquery); });
      }
      s.last = kLastOpen;
      ++s.depth;
      s.clauses.push_back(kNoClause);
      s.ranks.push_back(0);
      s.context = kNone;
      return true;
    case ')':
      if (s.depth == 0) return false;
      if (!resolve(s)) return false;
      clear_part(s);
      drop_inner_aliases(s);
      --s.depth;
      s.clauses.pop_back();
      s.ranks.pop_back();
      s.context = kNone;
      s.table = -1;  // an alias after `)` names the subquery, not the table it read last
      s.last = kLastClose;
      return true;
    case ',':
      if (clause == kLimit) {  // LIMIT a, b is LIMIT b OFFSET a: nothing more may follow b
        s.clauses.back() = kOffset;
        s.last = kLastOther;
        return true;
      }
      s.context = clause == kFrom ? kTable : kNone;
      s.last = kLastOther;
      return true;
    case ';':
      return s.depth == 0 ? end_statement(s) : false;
    case '*':
      if (!s.qualifier.empty()) {
        s.qualifier.clear();
        s.last = kLastName;
        return true;
      }
      break;
    default:
      break;
  }
  s.context = s.context != kTable ? kNone : kTable;
  s.last = kLastOther;
  return true;
}

bool SchemaConstraint::end_statement(State& s) const {
  if (s.mode != 0 || s.depth != 0 || s.words == 0) return false;
  if (!s.word.empty() && !complete(s, ' ')) return false;
  if (!s.qualifier.empty() || !in_scope(s) || !resolve(s)) return false;
  s.ended = true;
  return true;
}

// The scope check where the statement ends (sqlconstraint.py's docstring): bare columns of a table the statement
// names (or an alias / result name it defines), X.y with X a named table or a defined alias whose table has y.
bool SchemaConstraint::in_scope(const State& s) const {
  const Scope& scope = scope_of(s);
  auto has_column = [&](int32_t table, const std::string& column) {
    return contains(columns_[static_cast<size_t>(table)], column);
  };
  for (const auto& word : scope.bare) {
    if (std::find(scope.names.begin(), scope.names.end(), word) != scope.names.end()) continue;
    if (std::any_of(scope.defined.begin(), scope.defined.end(), [&](const auto& d) { return d.first == word; }))
      continue;
    if (std::any_of(scope.named.begin(), scope.named.end(), [&](int32_t t) { return has_column(t, word); })) continue;
    return false;
  }
  for (const auto& [qualifier, column] : scope.refs) {
    std::vector<int32_t> tables;
    for (const auto& [alias, table] : scope.defined)
      if (alias == qualifier) tables.push_back(table);
    const int32_t self = find_table(qualifier);
    if (self >= 0 && std::find(scope.named.begin(), scope.named.end(), self) != scope.named.end())
      tables.push_back(self);
    if (tables.empty()) return false;
    if (std::find(tables.begin(), tables.end(), -1) != tables.end()) continue;
    if (std::none_of(tables.begin(), tables.end(), [&](int32_t t) { return has_column(t, column); })) return false;
  }
  return true;
}

// sqlconstraint._resolve: the part at the state's depth ends; each of its pending names must be resolved by the tables
// it reads (or a result name / alias); what is not moves to the part around it, or fails at depth 0.
bool SchemaConstraint::resolve(State& s) const {
  const Scope& scope = scope_of(s);
  const int32_t depth = s.depth;
  if (std::none_of(scope.pending.begin(), scope.pending.end(), [depth](const Pending& p) { return p.depth == depth; }))
    return true;
  const std::vector<int32_t>& tables = part_of(s, depth);
  const bool subquery = std::find(tables.begin(), tables.end(), kSubquery) != tables.end();
  std::vector<Pending> pending;
  for (const Pending& p : scope.pending) {
    if (p.depth != depth) {
      pending.push_back(p);
      continue;
    }
    if (!p.qualifier.empty()) {
      const int32_t table = find_table(p.qualifier);
      if (table >= 0 && std::find(tables.begin(), tables.end(), table) != tables.end()) continue;
    } else if (std::find(scope.names.begin(), scope.names.end(), p.column) != scope.names.end() ||
               std::any_of(scope.defined.begin(), scope.defined.end(),
                           [&](const auto& d) { return d.first == p.column; }) ||
               subquery) {
      continue;
    } else {
      int having = 0;
      for (int32_t t : tables)
        if (t >= 0 && contains(columns_[static_cast<size_t>(t)], p.column)) ++having;
      if (having > 1) return false;  // ambiguous column name
      if (having == 1) continue;
    }
    if (depth == 0) return false;
    pending.push_back(Pending{depth - 1, p.qualifier, p.column});
  }
  edit_scope(s, [&](Scope& edited) { edited.pending = std::move(pending); });
  return true;
}

// sqlconstraint._define_alias: a FROM clause names `alias` for its last table (-1: a subquery); `X.y` written before
// it in this part (the select list) must be a column of that table.
bool SchemaConstraint::define_alias(State& s, std::string alias) const {
  const int32_t depth = s.depth, table = s.table;
  std::vector<Pending> pending;
  for (const Pending& p : scope_of(s).pending) {
    if (p.depth == depth && p.qualifier == alias) {
      if (table >= 0 && !contains(columns_[static_cast<size_t>(table)], p.column)) return false;
      continue;
    }
    pending.push_back(p);
  }
  edit_scope(s, [&](Scope& scope) {
    scope.pending = std::move(pending);
    scope.defined.emplace_back(alias, table);
    scope.aliases.push_back(Alias{depth, std::move(alias), table});
  });
  return true;
}

bool SchemaConstraint::partial_ok(const State& s) const {
  const std::string& word = s.word;
  if (starts_with_digit(word)) return !operand_end(s.last);
  if (limit_clause(s.clauses.back()))
    return s.clauses.back() == kLimit && s.last == kLastNumber && word.size() <= 6 &&
           std::string("offset").compare(0, word.size(), word) == 0;
  if (!s.qualifier.empty()) return has_prefix(qualified_columns(s), word);
  if (s.context == kTable) return has_prefix(tables_, word);
  if (s.context == kAlias || s.context == kAfterTable) return true;
  if (!may_follow(s)) {  // after an operand only a keyword may come here
    static const std::vector<std::string> sorted_keywords = [] {
      auto words = keywords();
      std::sort(words.begin(), words.end());
      return words;
    }();
    return has_prefix(sorted_keywords, word);
  }
  if (has_prefix(bare_, word)) return true;
  for (const auto& a : s.aliases())
    if (a.name.compare(0, word.size(), word) == 0) return true;
  for (const auto& n : s.names())
    if (n.compare(0, word.size(), word) == 0) return true;
  return short_alias(word);
}

const std::vector<std::string>& SchemaConstraint::qualified_columns(const State& s) const {
  const auto& aliases = s.aliases();
  for (auto a = aliases.rbegin(); a != aliases.rend(); ++a)
    if (a->name == s.qualifier && a->depth == s.depth)
      return a->table >= 0 ? columns_[static_cast<size_t>(a->table)] : all_columns_;
  const int32_t table = find_table(s.qualifier);
  return table >= 0 ? columns_[static_cast<size_t>(table)] : all_columns_;
}

// The word before `next` is whole: check it and update the context.
bool SchemaConstraint::complete(State& s, uint32_t next) const {
  std::string word;
  word.swap(s.word);
  if (starts_with_digit(word)) {
    if (operand_end(s.last)) return false;
    ++s.words;
    s.context = kNone;
    s.last = kLastNumber;
    return true;
  }
  if (next == '.') {
    if (!s.qualifier.empty()) return false;  // a.b.c
    if (s.context == kTable) return false;   // `FROM t.c`: a database name
    const bool known = find_table(word) >= 0 || has_alias(s, word);
    if (!(known || short_alias(word)) || !may_follow(s)) return false;
    s.qualifier = std::move(word);
    ++s.words;
    s.context = kNone;
    s.last = kLastName;
    return true;
  }
  const uint8_t was = s.last;
  s.last = kLastName;  // every path below that accepts the word ends a name, but a keyword's
  if (!s.qualifier.empty()) {
    if (!contains(qualified_columns(s), word)) return false;
    const bool alias = has_alias(s, s.qualifier);  // resolved where the part defines or reads it
    edit_scope(s, [&](Scope& scope) {
      scope.refs.emplace_back(s.qualifier, word);
      if (!alias) scope.pending.push_back(Pending{s.depth, s.qualifier, word});
    });
    s.qualifier.clear();
    ++s.words;
    s.context = kNone;
    return true;
  }
  if (s.context == kTable) {
    const int32_t table = find_table(word);
    if (table < 0) return false;
    const int32_t depth = s.depth;
    if (part_of(s, depth).size() >= kMaxTables) return false;
    edit_scope(s, [table, depth](Scope& scope) {
      if (std::find(scope.named.begin(), scope.named.end(), table) == scope.named.end()) scope.named.push_back(table);
      add_to_part(scope, depth, table);
    });
    s.table = table;
    ++s.words;
    s.context = kAfterTable;
    return true;
  }
  if (s.context == kAlias) {
    if (s.clauses.back() == kFrom) {
      if (!define_alias(s, std::move(word))) return false;
    } else {
      add_name(s, std::move(word));
    }
    ++s.words;
    s.context = kNone;
    s.last = kLastAlias;
    return true;
  }
  const int action = keyword_action(word);
  if (s.context == kAfterTable && action == kNotKeyword) {
    if (!define_alias(s, std::move(word))) return false;
    s.last = kLastAlias;
    ++s.words;
    s.context = kNone;
    return true;
  }
  const char clause = s.clauses.back();
  if (limit_clause(clause) && !(word == "offset" && clause == kLimit && was == kLastNumber))
    return false;  // LIMIT n [OFFSET m]
  // sqlconstraint.FUNCTIONS: a function name the database also has as a column (`date`, `total`) is that column
  // unless `(` follows at once
  const bool column = action != kNotKeyword && is_function(word) && contains(all_columns_, word);
  if (action != kNotKeyword && !(column && next != '(')) {
    if (action == kAs && was == kLastAlias) return false;  // `JOIN model_list AS T2_make AS T3`: one alias a name
    if ((clause == kWhere || clause == kOn) && is_aggregate(word) && !column) return false;  // misuse of aggregate
    const bool distinct = word == "distinct" || word == "all";
    // DISTINCT / ALL open a select list or an aggregate's arguments, follow UNION, IS [NOT]
    if (distinct && was != kLastSelect && was != kLastOpen) return false;
    const bool opens = action == kSelect || action == kUnion || action == kIntersect || action == kExcept ||
                       word == "is" || word == "not";  // sqlconstraint.DISTINCT_BEFORE
    s.last = distinct ? kLastDistinct : opens ? kLastSelect : kLastOther;
    ++s.words;
    return keyword(s, action);
  }
  s.last = was;
  if (!may_follow(s)) return false;
  s.last = kLastName;
  const auto& names = s.names();
  if (has_alias(s, word) || std::find(names.begin(), names.end(), word) != names.end()) {
    ++s.words;
    s.context = kNone;
    return true;
  }
  if (contains(all_columns_, word)) {  // a bare column: the scope check looks for its table at the end
    const int32_t depth = s.depth;
    edit_scope(s, [&](Scope& scope) {
      if (std::find(scope.bare.begin(), scope.bare.end(), word) == scope.bare.end()) scope.bare.push_back(word);
      scope.pending.push_back(Pending{depth, "", word});
    });
    ++s.words;
    s.context = kNone;
    return true;
  }
  return false;
}

bool SchemaConstraint::keyword(State& s, int action) const {
  if (const ClauseRank* order = clause_rank(action)) {  // sqlconstraint.next_rank
    const int now = static_cast<unsigned char>(s.ranks.back());
    if (now == kFreeRank || (now == 0 && action != kSelect)) {
      s.ranks.back() = static_cast<char>(kFreeRank);
    } else if (action == kFrom && now >= 2) {
      // IS [NOT] DISTINCT FROM: the rank stays
    } else {
      if (now < order->low || now > order->high) return false;
      s.ranks.back() = static_cast<char>(order->rank);
    }
    // sqlconstraint.FROM_ENDS: the part's FROM clause is over, its tables are all known: check its names
    const bool from_ends = action == kWhere || action == kGroup || action == kHaving || action == kOrder ||
                           action == kLimit;
    if (from_ends && static_cast<unsigned char>(s.ranks.back()) != kFreeRank && !part_of(s, s.depth).empty() &&
        !resolve(s))
      return false;
  }
  switch (action) {
    case kFrom:
      s.clauses.back() = kFrom;
      s.context = kTable;
      s.table = -1;
      return true;
    case kJoin:  // back in the FROM clause (after an ON): `AS x` names the joined table
      s.clauses.back() = kFrom;
      s.context = kTable;
      return true;
    case kAs:
      s.context = kAlias;
      return true;
    case kUnion: case kIntersect: case kExcept:
      if (!resolve(s)) return false;
      clear_part(s);
      drop_inner_aliases(s);
      s.clauses.back() = static_cast<char>(action);
      s.context = kNone;
      s.table = -1;
      return true;
    case kPlain:
      s.context = kNone;
      return true;
    default:  // a clause word
      s.clauses.back() = static_cast<char>(action);
      s.context = kNone;
      return true;
  }
}

// --- constraints by spec ---------------------------------------------------------------------------------------

std::shared_ptr<SchemaConstraint> SchemaConstraintCache::get(const Json& spec) {
  const std::string key = spec.dump();
  auto found = entries_.find(key);
  if (found != entries_.end()) {
    found->second.first = ++clock_;
    return found->second.second;
  }
  auto constraint = std::make_shared<SchemaConstraint>(spec, vocab_);
  if (capacity_ > 0 && entries_.size() >= capacity_) {
    auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                   [](const auto& a, const auto& b) { return a.second.first < b.second.first; });
    entries_.erase(oldest);
  }
  entries_.emplace(key, std::make_pair(++clock_, constraint));
  return constraint;
}

}  // namespace sqlcopilot
