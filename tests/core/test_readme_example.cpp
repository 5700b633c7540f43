// The README's tensor example, compiled and run so that the page stays true.
#include <sstream>

#include "gradcheck.h"

namespace mel {
namespace {

TEST(Readme, TensorExampleRuns) {
  std::ostringstream out;
  // ---- begin README example ----
  Generator gen(42);                                  // Philox4x32-10: same streams on every device
  Tensor w = randn({784, 10}, gen).requires_grad_();  // leaf that collects .grad
  Tensor x = rand({32, 784}, gen);
  Tensor y = randint(0, 10, {32}, gen);  // i64 labels
  Tensor loss = cross_entropy(matmul(x, w), y, {.label_smoothing = 0.1});
  loss.backward();          // w.grad() now holds dloss/dw
  out << w.grad() << "\n";  // shape, dtype, device and values
  // ---- end README example ----
  EXPECT_EQ(w.grad().shape(), (Shape{784, 10}));
  EXPECT_NE(out.str().find("Tensor(shape=[784, 10], dtype=f32, device=cpu)"), std::string::npos);
  EXPECT_TRUE(std::isfinite(loss.item()));
}

}  // namespace
}  // namespace mel
