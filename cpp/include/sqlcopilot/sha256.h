// SHA-256 of a file, to check an export's files against the checksums its manifest lists (FIPS 180-4).
#pragma once

#include <filesystem>
#include <string>

namespace sqlcopilot {

// The lower-case hex SHA-256 of the file's bytes; throws std::runtime_error naming the file when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace sqlcopilot
