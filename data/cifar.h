// CIFAR-10 and CIFAR-100 in their binary distribution: fixed-size records of label byte(s)
// followed by a 3x32x32 image stored channel by channel (R, G, B planes, rows top to bottom).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace mel::data {

// data_batch_1.bin .. data_batch_5.bin (train) or test_batch.bin (test); 3073-byte records
// (label 0..9, pixels). `dir` may also be the parent holding cifar-10-batches-bin/.
ImageDataset load_cifar10(const std::string& dir, Split split);

// train.bin or test.bin; 3074-byte records (coarse label 0..19, fine label 0..99, pixels).
// `dir` may also be the parent holding cifar-100-binary/.
ImageDataset load_cifar100(const std::string& dir, Split split);

// One batch file's bytes already in memory (the same checks: whole records, labels in range);
// `source` names them in errors.
ImageDataset parse_cifar10(const std::vector<uint8_t>& bytes, const std::string& source);
ImageDataset parse_cifar100(const std::vector<uint8_t>& bytes, const std::string& source);

}  // namespace mel::data
