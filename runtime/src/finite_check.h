// Non-finite numbers never become a result: every tensor of a model is scanned once when it is loaded
// (NaN/Inf in a float weight, a block scale or a table names the tensor, row and column), and the forward
// pass checks each layer's output and the logits (finite weights whose products overflow name the layer).
#pragma once
#include <cstddef>
#include <string>

#include "edgeq/base/finite.h"  // all_finite, for the forward pass
#include "edgeq/formats/gguf.h"

namespace edgeq::runtime {

// Throws edgeq::Error "<file>: tensor <name>: non-finite value <x> at row <r>, column <c>" for the first
// tensor (in file order) holding NaN or Inf once dequantized. Integer tensors (palette indices) are skipped.
void check_finite_tensors(const GgufFile& file);

}  // namespace edgeq::runtime
