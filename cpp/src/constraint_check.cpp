// sqlcopilot-constraint-check: the C++ SchemaConstraint driven over JSON lines, for the parity test with Python
// (tests/cpp/test_constraint_parity.py) and for timing advance().
//
//   stdin, one JSON object a line, one reply line each:
//     {"vocab": {"token_texts": [...], "eos_id": N, "stop_ids": [...], "banned_ids": [...]}}  -> {"tokens": V}
//     {"export": "DIR"}: the vocabulary of an export folder (ConstraintVocabulary::load)        -> {"tokens": V}
//     {"spec": {"tables": {...}}, "tokens": [ids]}  -> {"rejected_at": index of the first token advance() rejects,
//                                                     or -1, "mode", "depth", "words", "ended": of the last state}
//     {"spec": {...}, "text": "..."}                -> {"accepts": bool}
//     {"keywords": true}                            -> {"keywords": [...]}
//   sqlcopilot-constraint-check [--cache N] [--bench R]
//     --cache N: advance() through a cache of N entries (default: none); --bench R: also times advance() over the
//     token requests (best of R rounds) and prints the figures to stderr.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "sqlcopilot/constraint.h"
#include "sqlcopilot/json.h"

using sqlcopilot::Json;
using sqlcopilot::SchemaConstraint;
using State = SchemaConstraint::State;

namespace {

std::vector<int64_t> ids_of(const Json& list) {
  std::vector<int64_t> ids;
  for (const Json& id : list.as_array()) ids.push_back(id.as_int());
  return ids;
}

struct Request {
  std::shared_ptr<SchemaConstraint> constraint;
  std::vector<int64_t> tokens;
};

template <typename F>
double best_ns_per_call(int rounds, F&& body, int64_t* calls_out = nullptr) {
  double best = 1e300;
  for (int r = 0; r < rounds; ++r) {
    auto start = std::chrono::steady_clock::now();
    const int64_t calls = body();
    if (calls_out) *calls_out = calls;
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    if (calls > 0) best = std::min(best, ns / static_cast<double>(calls));
  }
  return best;
}

void bench(std::vector<Request>& requests, int rounds, int64_t vocab_size) {
  int64_t gold_calls = 0, walk_calls = 0;
  volatile int64_t sink = 0;
  // gold paths, no cache
  for (auto& r : requests) r.constraint->set_cache_limit(0);
  const double uncached = best_ns_per_call(rounds, [&] {
    int64_t calls = 0;
    for (const auto& r : requests) {
      State s = r.constraint->start();
      for (int64_t t : r.tokens) {
        auto next = r.constraint->advance_uncached(s, t);
        ++calls;
        if (!next) break;
        s = std::move(*next);
      }
      sink = sink + s.words;
    }
    return calls;
  }, &gold_calls);
  // gold paths through the cache, empty at the start of each round (misses: compute + insert)
  const double cold = best_ns_per_call(rounds, [&] {
    for (auto& r : requests) r.constraint->set_cache_limit(1 << 20);
    int64_t calls = 0;
    for (const auto& r : requests) {
      State s = r.constraint->start();
      for (int64_t t : r.tokens) {
        auto next = r.constraint->advance(s, t);
        ++calls;
        if (!next) break;
        s = std::move(*next);
      }
      sink = sink + s.words;
    }
    return calls;
  });
  // the same again: every call a hit
  const double warm = best_ns_per_call(rounds, [&] {
    int64_t calls = 0;
    for (const auto& r : requests) {
      State s = r.constraint->start();
      for (int64_t t : r.tokens) {
        auto next = r.constraint->advance(s, t);
        ++calls;
        if (!next) break;
        s = std::move(*next);
      }
      sink = sink + s.words;
    }
    return calls;
  });
  // a beam walk's view: at every state of the gold path, 32 other (pseudo-random) tokens, mostly rejected
  const double walk = best_ns_per_call(rounds, [&] {
    int64_t calls = 0;
    uint64_t seed = 12345;
    for (const auto& r : requests) {
      State s = r.constraint->start();
      for (int64_t t : r.tokens) {
        for (int k = 0; k < 32; ++k) {
          seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
          auto other = r.constraint->advance_uncached(s, static_cast<int64_t>((seed >> 33) % vocab_size));
          sink = sink + (other ? 1 : 0);
          ++calls;
        }
        auto next = r.constraint->advance_uncached(s, t);
        ++calls;
        if (!next) break;
        s = std::move(*next);
      }
    }
    return calls;
  }, &walk_calls);
  std::cerr << "advance() cost per call over " << requests.size() << " token sequences, each up to its rejected "
            << "token (" << gold_calls << " calls a round; " << walk_calls << " with the random candidates), best of "
            << rounds << " rounds:\n"
            << "  gold path, advance_uncached:        " << uncached << " ns\n"
            << "  gold path, advance, cache cold:     " << cold << " ns\n"
            << "  gold path, advance, cache warm:     " << warm << " ns\n"
            << "  random candidates, advance_uncached: " << walk << " ns\n";
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 0;
  size_t cache = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--bench" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (arg == "--cache" && i + 1 < argc) cache = static_cast<size_t>(std::atoll(argv[++i]));
    else {
      std::cerr << "usage: sqlcopilot-constraint-check [--cache ENTRIES] [--bench ROUNDS] < requests.jsonl\n";
      return 1;
    }
  }
  std::shared_ptr<const sqlcopilot::ConstraintVocabulary> vocab;
  std::unique_ptr<sqlcopilot::SchemaConstraintCache> constraints;
  std::vector<Request> requests;
  std::string line;
  int64_t number = 0;
  while (std::getline(std::cin, line)) {
    ++number;
    if (line.empty()) continue;
    try {
      const Json request = Json::parse(line);
      if (request.has("export")) {
        vocab = sqlcopilot::ConstraintVocabulary::load(request.at("export").as_string());
        constraints = std::make_unique<sqlcopilot::SchemaConstraintCache>(vocab);
        std::cout << "{\"tokens\": " << vocab->size() << "}\n";
      } else if (request.has("vocab")) {
        const Json& v = request.at("vocab");
        std::vector<std::string> texts;
        for (const Json& text : v.at("token_texts").as_array()) texts.push_back(text.as_string());
        const std::vector<int64_t> stops =
            v.has("stop_ids") ? ids_of(v.at("stop_ids")) : sqlcopilot::ConstraintVocabulary::statement_end_ids(texts);
        const int64_t eos = v.has("eos_id") && !v.at("eos_id").is_null() ? v.at("eos_id").as_int() : -1;
        vocab = std::make_shared<sqlcopilot::ConstraintVocabulary>(
            std::move(texts), eos, stops, v.has("banned_ids") ? ids_of(v.at("banned_ids")) : std::vector<int64_t>{});
        constraints = std::make_unique<sqlcopilot::SchemaConstraintCache>(vocab);
        std::cout << "{\"tokens\": " << vocab->size() << "}\n";
      } else if (request.has("keywords")) {
        std::vector<Json> words;
        for (const auto& word : SchemaConstraint::keywords()) words.push_back(Json::of_string(word));
        std::cout << Json::of_object({{"keywords", Json::of_array(words)}}).dump() << "\n";
      } else {
        if (!constraints) throw std::runtime_error("no vocab line before the first request");
        auto constraint = constraints->get(request.at("spec"));
        if (cache > 0 && constraint->cache_size() == 0) constraint->set_cache_limit(cache);
        if (request.has("text")) {
          std::cout << "{\"accepts\": " << (constraint->accepts(request.at("text").as_string()) ? "true" : "false")
                    << "}\n";
          continue;
        }
        std::vector<int64_t> tokens = ids_of(request.at("tokens"));
        State state = constraint->start();
        int64_t rejected = -1;
        for (size_t i = 0; i < tokens.size(); ++i) {
          auto next = constraint->advance(state, tokens[i]);
          if (!next) {
            rejected = static_cast<int64_t>(i);
            break;
          }
          state = std::move(*next);
        }
        std::cout << "{\"rejected_at\": " << rejected << ", \"mode\": " << int(state.mode)
                  << ", \"depth\": " << state.depth << ", \"words\": " << state.words
                  << ", \"ended\": " << (state.ended ? "true" : "false") << "}\n";
        if (rounds > 0) requests.push_back({constraint, std::move(tokens)});
      }
    } catch (const std::exception& error) {
      std::cout << Json::of_object({{"error", Json::of_string("line " + std::to_string(number) + ": " +
                                                              error.what())}}).dump()
                << "\n";
    }
  }
  std::cout.flush();
  if (rounds > 0 && !requests.empty()) bench(requests, rounds, vocab->size());
  return 0;
}
