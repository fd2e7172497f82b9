// C++ tests of the schema constraint (sqlcopilot/constraint.h), run by ctest: hand cases whose answers come from
// Python's sqlcopilot_core/sqlconstraint.py (tests/cpp/test_constraint_parity.py checks the two on all of Spider dev).
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "sqlcopilot/constraint.h"
#include "sqlcopilot/json.h"

using sqlcopilot::ConstraintVocabulary;
using sqlcopilot::Json;
using sqlcopilot::SchemaConstraint;

namespace {

int passed = 0, failed = 0;

void check(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("check failed: " + what);
}

void run(const std::string& name, const std::function<void()>& test) {
  try {
    test();
    ++passed;
    std::cout << "PASS " << name << std::endl;
  } catch (const std::exception& error) {
    ++failed;
    std::cout << "FAIL " << name << ": " << error.what() << std::endl;
  }
}

constexpr int64_t kEos = 256, kPad = 257;

// The tiny byte tokenizer's texts: ASCII bytes as themselves, other bytes U+FFFD (decoded alone), then eos and pad.
std::shared_ptr<const ConstraintVocabulary> byte_vocab() {
  std::vector<std::string> texts;
  for (int i = 0; i < 128; ++i) texts.emplace_back(1, static_cast<char>(i));
  for (int i = 128; i < 256; ++i) texts.emplace_back("\xEF\xBF\xBD");
  texts.emplace_back("<eos>");
  texts.emplace_back("<pad>");
  auto stops = ConstraintVocabulary::statement_end_ids(texts);
  return std::make_shared<ConstraintVocabulary>(texts, kEos, stops, std::vector<int64_t>{kPad});
}

SchemaConstraint pets(std::shared_ptr<const ConstraintVocabulary> vocab) {
  SchemaConstraint c({{"pets", {"id", "name", "age"}}, {"Owners", {"ID", "pet_id", "owner_name"}}}, vocab);
  c.set_cache_limit(100);  // small: the walks below fill and clear it
  return c;
}

struct Walk {
  int64_t rejected_at = -1;
  SchemaConstraint::State state;
};

// Each byte a token, then end-of-text.
Walk walk(SchemaConstraint& constraint, const std::string& text, bool eos = true) {
  Walk out{-1, constraint.start()};
  std::vector<int64_t> ids;
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  if (eos) ids.push_back(kEos);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto next = constraint.advance(out.state, ids[i]);
    auto uncached = constraint.advance_uncached(out.state, ids[i]);
    check(next.has_value() == uncached.has_value() && (!next || *next == *uncached), "cache agrees at " + text);
    if (!next) {
      out.rejected_at = static_cast<int64_t>(i);
      return out;
    }
    out.state = *next;
  }
  return out;
}

void expect_accepted(SchemaConstraint& c, const std::string& text, int32_t words) {
  Walk w = walk(c, text);
  check(w.rejected_at == -1, text + ": rejected at " + std::to_string(w.rejected_at));
  check(w.state.ended, text + ": ended");
  check(w.state.words == words, text + ": words " + std::to_string(w.state.words));
}

void expect_rejected(SchemaConstraint& c, const std::string& text, int64_t at) {
  Walk w = walk(c, text);
  check(w.rejected_at == at, text + ": rejected at " + std::to_string(w.rejected_at) + ", expected " +
                                 std::to_string(at));
}

}  // namespace

int main() {
  auto vocab = byte_vocab();
  // (expected numbers: Python's SchemaConstraint on the same vocabulary)
  run("valid joins with aliases end the statement", [&] {
    auto c = pets(vocab);
    expect_accepted(c, "SELECT T1.name FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id", 16);
    expect_accepted(c, "SELECT p.name, count(*) FROM pets p JOIN owners o ON p.id = o.pet_id GROUP BY p.name HAVING "
                       "count(*) > 1", 22);
    expect_accepted(c, "SELECT name FROM pets WHERE id IN (SELECT pet_id FROM owners)", 11);
    expect_accepted(c, "SELECT name FROM pets UNION SELECT owner_name FROM owners", 9);
    expect_accepted(c, "SELECT name AS n FROM pets ORDER BY n", 9);
    expect_accepted(c, "SELECT name FROM pets WHERE age > 3.5 ORDER BY age DESC LIMIT 1", 13);
    expect_accepted(c, "SELECT \"name\" FROM pets", 4);
  });
  run("unknown columns are rejected where the name stops being a prefix", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT colour FROM pets", 10);   // "colo": no column, table or keyword starts so
    expect_rejected(c, "SELECT pets.colour FROM pets", 12);
    expect_rejected(c, "SELECT a.b.c FROM pets", 9);
  });
  run("where the statement ends, its columns must belong to the tables it reads (the scope check)", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT owner_name FROM pets", 27);       // the end of text: owner_name is owners'
    expect_rejected(c, "SELECT T1.name FROM owners AS T1", 32);  // T1 is owners, which has no name
    expect_rejected(c, "SELECT name FROM pets JOIN pets.id", 31);  // a table followed by '.': a database name
    expect_accepted(c, "SELECT owner_name FROM pets JOIN owners ON pets.id = owners.pet_id", 11);
    expect_accepted(c, "SELECT T.name FROM (SELECT owner_name AS name FROM owners) AS T", 12);
  });
  run("each query part reads its own tables; LIMIT takes integers; DISTINCT opens a list", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT T1.owner_name FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id", 36);  // AS T1
    expect_rejected(c, "SELECT name FROM pets UNION SELECT name FROM owners", 51);  // owners has no name
    expect_rejected(c, "SELECT T1.name FROM pets AS T1 UNION SELECT T1.name FROM owners AS T2", 69);
    expect_rejected(c, "SELECT id FROM pets JOIN owners ON pets.id = owners.pet_id", 58);  // ambiguous
    expect_rejected(c, "SELECT name FROM pets LIMIT 1 AND age > 1", 30);
    expect_rejected(c, "SELECT DISTINCT name , DISTINCT age FROM pets", 31);
    expect_rejected(c, "SELECT avg(pets) FROM pets", 15);  // a table's name is no operand
    expect_rejected(c, "SELECT name FROM pets WHERE age = ((((((((1))))))))", 40);  // deeper than 6
    expect_accepted(c, "SELECT T2.owner_name FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id", 16);
    expect_accepted(c, "SELECT name FROM pets WHERE id IN (SELECT pet_id FROM owners WHERE owner_name = name)", 14);
    expect_accepted(c, "SELECT T1.name FROM pets AS T1 INTERSECT SELECT T1.owner_name FROM owners AS T1", 15);
    expect_accepted(c, "SELECT name FROM pets LIMIT 2, 1", 7);
    expect_rejected(c, "SELECT name FROM pets LIMIT 2, 1, 3", 32);  // LIMIT a, b ends there
    expect_rejected(c, "SELECT name FROM pets WHERE name = '" + std::string(101, 'x') + "'", 136);  // > 100 characters
  });
  run("an unknown table after FROM is rejected", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT name FROM animals", 17);
  });
  run("unbalanced parentheses are rejected", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT name FROM pets)", 21);
    expect_rejected(c, "SELECT count(name) FROM pets WHERE (age > 1", 43);  // end-of-text with a parenthesis open
    expect_rejected(c, "SELECT count(name FROM pets", 27);  // end-of-text with a parenthesis open
  });
  run("clauses come once each, in SQL's order", [&] {
    auto c = pets(vocab);
    expect_accepted(c, "SELECT name FROM pets WHERE age > 1 GROUP BY name HAVING count(*) > 1 ORDER BY name LIMIT 1 "
                       "OFFSET 2", 20);
    expect_accepted(c, "SELECT name FROM pets WHERE age > 1 UNION SELECT name FROM pets ORDER BY name LIMIT 1", 17);
    expect_accepted(c, "SELECT name FROM pets WHERE age = (SELECT max(age) FROM pets ORDER BY age LIMIT 1)", 16);
    // a depth that is not a query keeps no order; a later FROM is IS [NOT] DISTINCT FROM
    expect_accepted(c, "SELECT sum(age) OVER (PARTITION BY name ORDER BY age) FROM pets", 12);
    expect_accepted(c, "SELECT count(*) FILTER (WHERE age > 1) FROM pets", 8);
    expect_accepted(c, "SELECT name FROM pets WHERE age IS NOT DISTINCT FROM (SELECT max(age) FROM pets)", 15);
    expect_accepted(c, "VALUES (1) UNION SELECT age FROM pets", 7);
    expect_rejected(c, "SELECT name FROM pets ORDER BY age LIMIT 1 ORDER BY", 44);
    expect_rejected(c, "SELECT name FROM pets LIMIT 1 SELECT", 30);
    expect_rejected(c, "SELECT name FROM pets ORDER BY age UNION", 40);
    expect_rejected(c, "SELECT name FROM pets WHERE age > 1 JOIN", 40);
    expect_rejected(c, "SELECT name FROM pets LIMIT 1000000000000000000000000", 52);  // a number of 25 digits
  });
  run("two operands in a row are refused except as an alias", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT name FROM pets LIMIT 1 (SELECT", 30);  // `(` after a number
    expect_rejected(c, "SELECT name FROM pets LIMIT 1. name", 31);    // "n": after LIMIT n only OFFSET
    expect_rejected(c, "SELECT DISTINCT DISTINCT name", 24);
    expect_rejected(c, "SELECT name FROM pets WHERE age = 1 name", 38);
    expect_rejected(c, "SELECT name FROM pets WHERE name = 'a' 'b'", 39);
    expect_rejected(c, "SELECT name FROM pets WHERE age = 1 2", 36);
    expect_accepted(c, "SELECT name FROM pets LIMIT 1 OFFSET 2", 8);
    expect_accepted(c, "SELECT age name FROM pets AS p WHERE p.age IN (1, 2) AND name = 'x' ORDER BY 1 DESC", 20);
  });
  run("names are checked where the FROM clause ends; whitespace runs are bounded", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT owner_name FROM pets ORDER BY name", 33);  // at the space after ORDER
    expect_rejected(c, "SELECT T1.name FROM pets AS T2 WHERE T2.age > 1", 36);  // T1 is never defined
    expect_rejected(c, "SELECT name FROM pets AS T1 JOIN pets AS T2 ON T1.id = T2.id LIMIT 1", 66);  // ambiguous
    expect_accepted(c, "SELECT count(*) AS n FROM pets GROUP BY age ORDER BY n", 12);
    expect_accepted(c, "SELECT name FROM pets \n \n \n \nLIMIT 1", 6);  // 8 whitespace characters in a row
    expect_rejected(c, "SELECT name FROM pets \n \n \n \n  LIMIT 1", 29);  // the 9th
  });
  run("a part reads at most 6 tables; no count / sum / avg in WHERE or ON", [&] {
    auto c = pets(vocab);
    const std::string six = "SELECT count(*) FROM pets AS a JOIN pets AS b ON a.id = b.id JOIN pets AS c ON c.id = a.id "
                            "JOIN pets AS d ON d.id = a.id JOIN pets AS e ON e.id = a.id JOIN pets AS f ON f.id = a.id";
    expect_accepted(c, six, 51);
    expect_rejected(c, six + " JOIN pets AS g ON g.id = a.id", 190);
    expect_rejected(c, "SELECT name FROM pets WHERE age > 1 AND count(*) > 1", 45);
    expect_rejected(c, "SELECT name FROM pets AS a JOIN pets AS b ON a.id = count(*)", 57);
    expect_accepted(c, "SELECT name FROM pets WHERE id IN (SELECT count(*) FROM owners)", 11);
  });
  run("a name gets one alias", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT a.name FROM pets AS a_name AS b", 36);
    expect_rejected(c, "SELECT count(*) AS n AS m FROM pets", 23);
    expect_rejected(c, "SELECT p.name FROM pets p AS q", 28);
    expect_accepted(c, "SELECT p.name AS n FROM pets AS p ORDER BY n", 12);
  });
  run("a function name that is also a column is that column unless ( follows", [&] {
    SchemaConstraint c({{"pets", {"id", "name", "age"}}, {"Owners", {"ID", "pet_id", "owner_name", "date"}}}, vocab);
    expect_rejected(c, "SELECT name , date FROM pets", 28);
    expect_rejected(c, "SELECT name , date FROM pets WHERE age > 1", 34);
    expect_accepted(c, "SELECT name , date FROM pets JOIN owners ON pets.id = owners.pet_id", 12);
    expect_accepted(c, "SELECT date('now') FROM pets", 5);
  });
  run("the end inside a string is rejected", [&] {
    auto c = pets(vocab);
    expect_rejected(c, "SELECT name FROM pets WHERE name = 'Rex", 39);
    check(c.accepts("SELECT name FROM pets WHERE name = 'no such (name'"), "parenthesis inside a string");
  });
  run("';' and a blank line end the statement; later tokens change nothing", [&] {
    auto c = pets(vocab);
    expect_accepted(c, "SELECT name FROM pets; garbage", 4);
    expect_accepted(c, "SELECT name FROM pets\n\nfoo", 4);
    check(!c.advance(c.start(), kPad), "a special token is banned");
    check(!c.advance(c.start(), 999), "an id outside the vocabulary is rejected");
  });
  run("characters are classified as Python does", [&] {
    auto c = pets(vocab);
    expect_accepted(c, "SELECT name\x1c" "FROM pets", 4);  // str.isspace('\x1c') is True
    check(c.accepts("SELECT name FROM pets WHERE name = '\xC3\xA9'"), "UTF-8 inside a string");
    check(!c.accepts("SELECT \xC3\xA9"), "a non-ASCII word that is no name");
    check(!c.accepts("SELECT \xEF\xBF\xBD"), "U+FFFD in SQL");
    check(c.accepts("SELECT 'x\xEF\xBF\xBD'"), "U+FFFD in a string");
    check(c.accepts("SELECT \xC2\xB2"), "'\u00b2'.isdigit(): a number");
    check(!c.accepts("SELECT x\xC2\xB2 FROM"), "x\u00b2 is no short alias (re's \\d is decimal only)");
    check(c.accepts("SELECT NAME FROM PETS, OWNERS"), "names are case-insensitive");
    check(!c.accepts("SELECT \xC3\x89T"), "'\u00c9t' (lowercased) starts no name");
  });
  run("SchemaConstraintCache builds one constraint per spec", [&] {
    sqlcopilot::SchemaConstraintCache cache(vocab, 2);
    Json a = Json::parse(R"({"tables": {"pets": ["id", "name"]}})");
    Json b = Json::parse(R"({"tables": {"owners": ["id"]}})");
    auto first = cache.get(a);
    check(cache.get(a) == first, "same spec, same constraint");
    check(cache.get(b) != first, "another spec, another constraint");
    check(first->accepts("SELECT name FROM pets") && !first->accepts("SELECT name FROM owners"), "spec's tables");
  });
  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 ? 0 : 1;
}
