// The schema constraint for decoding, ported character for character from sqlcopilot_core/sqlconstraint.py: a token
// is allowed only if the SQL text it completes can still be valid over the database's table and column names.
//
//   auto vocab = sqlcopilot::ConstraintVocabulary::load(export_dir);        // once per export (token_texts.json)
//   sqlcopilot::SchemaConstraintCache constraints(vocab);                      // once per runner
//   auto constraint = constraints.get(request.at("constraint"));              // per request (cached by spec)
//   State s = constraint->start();
//   std::optional<State> next = constraint->advance(s, token);              // per candidate; nullopt: rejected
//
// A char-level prefix state machine (sqlconstraint.py's docstring says what it enforces). Every character is
// classified as Python does (str.isalnum, isspace, isdigit, lower and re's \d from Python's own Unicode database,
// scripts/gen_unicode_tables.py), so the C++ and Python constraints reject the same token of the same text (checked
// by tests/cpp/test_constraint_parity.py). One difference by design: the spec's names are lowercased a character at a
// time, where Python lowers a whole name (they differ only for a Greek capital sigma ending a word).
//
// advance() can cache its results like Python's (set_cache_limit). The cache is off by default: in C++ a lookup costs
// about what the computation does (sqlcopilot-constraint-check --bench, SmolLM2 vocabulary, Spider dev: ~140-150 ns
// a call computed, ~100-150 ns a cache hit, ~170-220 ns a miss; Python: ~6 us cold, ~2.4 us warm), and a beam walk
// mostly misses (each step's states are new). With the cache on, advance() is not thread-safe; advance_uncached()
// always is.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace sqlcopilot {

class Json;

// The tokenizer's side of the constraint, shared by every database's constraint: each token id's text (UTF-8, as
// decoding the token alone gives: sqlconstraint.token_texts), the end-of-text id (-1: none), the statement-end ids
// (generate.statement_end_ids: texts holding ';' or a blank line) and the banned ids (special tokens but end-of-text).
class ConstraintVocabulary {
 public:
  ConstraintVocabulary(std::vector<std::string> token_texts, int64_t eos_id, const std::vector<int64_t>& stop_ids,
                       const std::vector<int64_t>& banned_ids);

  // From an export folder: token_texts.json (the list of texts), manifest.json's eos_token_id, special_token_ids
  // (banned but end-of-text) and stop_token_ids (when absent, computed from the texts as Python does).
  static std::shared_ptr<const ConstraintVocabulary> load(const std::filesystem::path& export_dir);

  // generate.statement_end_ids: the ids whose text holds ';' or "\n\n".
  static std::vector<int64_t> statement_end_ids(const std::vector<std::string>& token_texts);

  int64_t size() const { return static_cast<int64_t>(texts_.size()); }
  int64_t eos_id() const { return eos_id_; }
  const std::string& text(int64_t token) const { return texts_[static_cast<size_t>(token)]; }

 private:
  friend class SchemaConstraint;
  std::vector<std::string> texts_;
  int64_t eos_id_;
  std::vector<uint8_t> banned_;
  std::vector<int32_t> cut_;  // stop ids: byte offset of the first ';' or "\n\n" (-1: not a stop id or neither)
};

// Table name -> its column names (as the database writes them; compared case-insensitively).
using SchemaTables = std::map<std::string, std::vector<std::string>>;

class SchemaConstraint {
 public:
  struct Alias {
    int32_t depth;
    std::string name;
    int32_t table;  // index into tables(), -1: none
    bool operator==(const Alias& other) const {
      return depth == other.depth && table == other.table && name == other.name;
    }
  };
  // A name not resolved yet (Python's State.pending): (depth, qualifier or "" for a bare column, column).
  struct Pending {
    int32_t depth;
    std::string qualifier;
    std::string column;
    bool operator==(const Pending& other) const {
      return depth == other.depth && qualifier == other.qualifier && column == other.column;
    }
  };
  static constexpr int32_t kSubquery = -2;  // in a part's tables: the part reads a subquery (sqlconstraint.SUBQUERY)
  // The aliases and column names the query defined, and what the scope check at the statement's end reads (Python's
  // named / defined / bare / refs), the tables of each query part and the names they have not resolved yet (parts /
  // pending): shared between states (copy on write), null when all are empty.
  struct Scope {
    std::vector<Alias> aliases;
    std::vector<std::string> names;
    std::vector<int32_t> named;                                  // tables named after FROM / JOIN (never dropped)
    std::vector<std::pair<std::string, int32_t>> defined;        // every (alias, table or -1) defined
    std::vector<std::string> bare;                               // bare column names used
    std::vector<std::pair<std::string, std::string>> refs;       // every X.y used
    // per depth, the tables the query part reads (kSubquery: a subquery); depths past the end read none (kept so)
    std::vector<std::vector<int32_t>> parts;
    std::vector<Pending> pending;                                // names the parts have not resolved yet
    size_t hash = 0;
    bool empty() const {
      return aliases.empty() && names.empty() && named.empty() && defined.empty() && bare.empty() && refs.empty() &&
             parts.empty() && pending.empty();
    }
    bool operator==(const Scope& o) const {
      return aliases == o.aliases && names == o.names && named == o.named && defined == o.defined &&
             bare == o.bare && refs == o.refs && parts == o.parts && pending == o.pending;
    }
  };
  enum Context : uint8_t { kNone = 0, kTable = 1, kAlias = 2, kAfterTable = 3 };
  // What ended last (sqlconstraint.State.last): an operand cannot follow an operand except as an alias.
  // kLastSelect: SELECT, a set operator, IS or NOT; kLastOpen: `(` (DISTINCT / ALL may follow either); kLastAlias: a
  // name the query defined (AS x, or a name after a table).
  enum Last : uint8_t { kLastOther = 0, kLastNumber = 1, kLastString = 2, kLastName = 3, kLastClose = 4,
                        kLastDistinct = 5, kLastSelect = 6, kLastOpen = 7, kLastAlias = 8 };

  // Python's State, field for field. Small to copy: the strings are short, the scope is shared.
  struct State {
    uint8_t mode = 0;        // 0 SQL, 1 '...', 2 "...", 3 `...`, 4 [...]
    int32_t quoted = 0;      // characters of the string or quoted name being written
    uint8_t context = kNone;
    bool newline = false;    // the last character was a newline outside a string
    int32_t spaces = 0;      // whitespace characters in a row (outside strings) just written
    bool ended = false;
    uint8_t last = kLastOther;
    int32_t depth = 0;
    int32_t words = 0;       // identifiers and keywords completed
    int32_t table = -1;      // the table named last in a FROM list (index into tables(), -1: none)
    std::string word;        // the identifier or number being written (lowercase)
    std::string qualifier;   // X of `X.` before the word (empty: none)
    std::string clauses = std::string(1, '\0');  // per depth, the clause being written (a code; 0: none)
    std::string ranks = std::string(1, '\0');    // per depth, the clause-order rank (sqlconstraint.CLAUSE_RANKS)
    std::shared_ptr<const Scope> scope;

    bool operator==(const State& other) const;
    bool operator!=(const State& other) const { return !(*this == other); }
    size_t hash() const;
    const std::vector<Alias>& aliases() const;
    const std::vector<std::string>& names() const;
  };

  SchemaConstraint(const SchemaTables& tables, std::shared_ptr<const ConstraintVocabulary> vocab);
  // spec: {"tables": {table: [column, ...]}} as sqlconstraint.constraint_spec(db_path) gives it.
  SchemaConstraint(const Json& spec, std::shared_ptr<const ConstraintVocabulary> vocab);
  static SchemaTables tables_from_spec(const Json& spec);
  static std::vector<std::string> keywords();  // sqlconstraint.KEYWORDS, sorted

  State start() const { return State(); }
  // The state after `token`, or nullopt when the token cannot lead to valid SQL (also for an id outside the
  // vocabulary's texts, where Python would raise). Through the cache when it is on.
  std::optional<State> advance(const State& state, int64_t token);
  std::optional<State> advance_uncached(const State& state, int64_t token) const;
  // Whether `text` (UTF-8) is a valid prefix (not necessarily a whole statement).
  bool accepts(const std::string& text) const;
  // The state after the characters of `text`, or nullopt.
  std::optional<State> feed(const State& state, const std::string& text) const;

  const std::vector<std::string>& tables() const { return tables_; }
  const std::vector<std::string>& columns(int32_t table) const { return columns_[static_cast<size_t>(table)]; }
  const ConstraintVocabulary& vocabulary() const { return *vocab_; }

  // The cache holds at most `limit` (state, token) results; past it, it is cleared (Python: 200000). 0 (the
  // default): no cache.
  void set_cache_limit(size_t limit) { cache_limit_ = limit; cache_.clear(); }
  size_t cache_size() const { return cache_.size(); }

 private:
  struct Key {
    State state;
    int64_t token;
    bool operator==(const Key& other) const { return token == other.token && state == other.state; }
  };
  struct KeyHash {
    size_t operator()(const Key& key) const;
  };

  bool feed_bytes(State& s, const char* begin, const char* end) const;
  bool feed_char(State& s, uint32_t cp, const char* bytes, size_t length) const;
  bool end_statement(State& s) const;
  bool in_scope(const State& s) const;
  bool resolve(State& s) const;
  bool define_alias(State& s, std::string alias) const;
  bool complete(State& s, uint32_t next) const;
  bool keyword(State& s, int code) const;
  bool partial_ok(const State& s) const;
  const std::vector<std::string>& qualified_columns(const State& s) const;
  int32_t find_table(const std::string& name) const;

  std::shared_ptr<const ConstraintVocabulary> vocab_;
  std::vector<std::string> tables_;                 // sorted, lowercase
  std::vector<std::vector<std::string>> columns_;   // per table, sorted, lowercase
  std::vector<std::string> all_columns_, bare_;     // sorted
  std::unordered_map<Key, std::optional<State>, KeyHash> cache_;
  size_t cache_limit_ = 0;
};

// Constraints by spec (one per database), built on first use: construct once per database, advance per candidate.
class SchemaConstraintCache {
 public:
  explicit SchemaConstraintCache(std::shared_ptr<const ConstraintVocabulary> vocab, size_t capacity = 64)
      : vocab_(std::move(vocab)), capacity_(capacity) {}
  std::shared_ptr<SchemaConstraint> get(const Json& spec);

 private:
  std::shared_ptr<const ConstraintVocabulary> vocab_;
  size_t capacity_;
  uint64_t clock_ = 0;
  std::unordered_map<std::string, std::pair<uint64_t, std::shared_ptr<SchemaConstraint>>> entries_;
};

}  // namespace sqlcopilot
