// NumPy .npy files: every supported dtype round-trips with NumPy's own header layout (version 1.0,
// 64-byte aligned); headers as other writers space them, versions 2 and 3 read; bad files are
// errors naming the file and what is wrong.
#include <gtest/gtest.h>

#include "core/factory.h"
#include "data/npy.h"
#include "tests/gradcheck.h"

namespace mel::data {
namespace {

std::string npy_with_header(const std::string& header, const std::string& data, int version = 1) {
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  if (version == 1) {
    out += static_cast<char>(header.size() & 0xff);
    out += static_cast<char>(header.size() >> 8);
  } else {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return out + header + data;
}

TEST(Npy, EveryDtypeRoundTripsWithNumpysHeader) {
  for (DType d : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8}) {
    for (const Shape& shape : {Shape{}, Shape{5}, Shape{2, 3}, Shape{2, 1, 3, 2}, Shape{0, 4}}) {
      std::vector<double> v;
      for (int64_t i = 0; i < numel_of(shape); ++i) v.push_back(static_cast<double>(i % 200));
      const Tensor t = tensor(v, shape, d);
      const std::string bytes = npy_bytes(t);
      const size_t header_len =
          static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
      EXPECT_EQ((10 + header_len) % 64, 0u) << "NumPy aligns the data to 64 bytes";
      EXPECT_EQ(bytes[10 + header_len - 1], '\n');
      const Tensor back = parse_npy(bytes, "t.npy");
      EXPECT_EQ(back.dtype(), d);
      EXPECT_EQ(back.shape(), shape);
      EXPECT_EQ(back.to_vector(), t.to_vector());
    }
  }
  // NumPy's spelling of a 1-d and a 0-d shape
  EXPECT_NE(npy_bytes(zeros({3})).find("'shape': (3,)"), std::string::npos);
  EXPECT_NE(npy_bytes(zeros({})).find("'shape': ()"), std::string::npos);
  EXPECT_NE(
      npy_bytes(zeros({2, 3})).find("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
      std::string::npos);
}

TEST(Npy, OtherSpacingAndVersionsRead) {
  const std::string data(2 * 2 * sizeof(int64_t), '\0');
  for (int version : {1, 2, 3}) {
    const Tensor t = parse_npy(
        npy_with_header("{'shape':(2,2),'fortran_order':False,'descr':'<i8'}\n", data, version),
        "v.npy");
    EXPECT_EQ(t.shape(), (Shape{2, 2}));
    EXPECT_EQ(t.dtype(), DType::i64);
  }
}

TEST(Npy, BadFilesAreErrorsNamingTheFile) {
  EXPECT_MEL_ERROR(parse_npy("PK\x03\x04 not npy", "a.zip"), "a.zip", "not a .npy file");
  EXPECT_MEL_ERROR(parse_npy(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                             "(2,), }\n",
                                             "12345678", 4),
                             "v4.npy"),
                   "v4.npy", "version 4");
  EXPECT_MEL_ERROR(parse_npy(npy_with_header("{'descr': '>f4', 'fortran_order': False, 'shape': "
                                             "(2,), }\n",
                                             "12345678"),
                             "big.npy"),
                   "big.npy", "'>f4'", "is not read");
  EXPECT_MEL_ERROR(parse_npy(npy_with_header("{'descr': '<f4', 'fortran_order': True, 'shape': "
                                             "(2, 2), }\n",
                                             std::string(16, '\0')),
                             "f.npy"),
                   "f.npy", "fortran_order");
  EXPECT_MEL_ERROR(parse_npy(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                             "(2, 3), }\n",
                                             std::string(20, '\0')),
                             "short.npy"),
                   "short.npy", "20 bytes of data", "24 bytes expected");
  EXPECT_MEL_ERROR(parse_npy(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                             "(2, x), }\n",
                                             ""),
                             "shape.npy"),
                   "shape.npy", "bad dimension 'x'");
  EXPECT_MEL_ERROR(parse_npy(npy_with_header("{'descr': '<f4', 'shape': (2,), }\n", ""), "n.npy"),
                   "n.npy", "no 'fortran_order' field");
  EXPECT_MEL_ERROR(parse_npy(std::string("\x93NUMPY\x01\x00\xff\x00{", 11), "cut.npy"), "cut.npy",
                   "ends inside its header");
  EXPECT_MEL_ERROR(load_npy("/nonexistent/x.npy"), "/nonexistent/x.npy", "cannot open");
  EXPECT_MEL_ERROR(npy_bytes(zeros({2}, DType::bf16)), "bf16", "cannot be written");
}

}  // namespace
}  // namespace mel::data
