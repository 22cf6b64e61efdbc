// GPTQ (Frantar et al. 2022) with llama.cpp's block formats as the grid. Columns are processed one block of
// the target type at a time (32 or 256 columns, GPTQ's lazy batch): the block's scales (and mins) come from
// quant::quantize_rows - the format's own search - on the error-updated weights, weighted by the diagonal of
// U_FF^-1 U_FF^-T (U the upper Cholesky factor of H^-1); then every column of the block is rounded to the
// nearest level of that grid (quant::set_block_code) and its error, divided by U_jj, is fed into the block's
// later columns; the block's errors update all later columns at once (W_R -= E U_FR). Types without code
// access (block_code_levels 0) keep the search's rounding and use the joint update W_R -= (W_F - Q_F) U_FF^-1 U_FR.
// The result is a standard block tensor. Numerics in double for H; deterministic.
//
// Act-order (optional; GPTQ paper, AutoGPTQ's desc_act with static_groups): columns are processed in order of
// decreasing H_jj, so the columns with the loudest inputs are rounded first, while many columns are left to
// absorb their error; H is permuted to that order and the result written back in the original column order.
// The block formats share scales (and mins) within blocks of 32 or 256 columns, and in the permuted order a
// block's columns are visited scattered among other blocks' - no point of the loop sees a block "begin" with
// all of its columns still unrounded but the feedback of the earlier blocks applied, as the natural order does.
// So the grids are fixed up front (static groups): every block's scales come from the format's own search on
// the weights as given (after AWQ's scaling, when composed), weighted by the ridged diagonal of H (the imatrix
// method's fit); then each column is rounded to the nearest level of its block's fixed grid, in permuted order,
// with GPTQ's error feedback (lazy batches of 128 permuted columns). Every element is one of its block's levels
// and the scales are the format's own, so the output is a standard block tensor of the same type. Types
// without per-element code access (block_code_levels 0: TQ1_0, TQ2_0, Q8_1, none of them writable) ignore
// act_order and use the natural order.
#pragma once
#include <cstdint>
#include <vector>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/base/thread_pool.h"

namespace edgeq::calibrate {

// Output error of replacing W by Q for inputs whose Hessian is H = sum x xᵀ (cols × cols, row-major):
// sum over rows r of (w_r - q_r)ᵀ H (w_r - q_r)  (= ||X Wᵀ - X Qᵀ||²). Rows are summed in fixed blocks, spread
// over pool when given: the same value for any pool size.
double output_error(const float* W, const float* Q, int64_t rows, int64_t cols, const double* H,
                    ThreadPool* pool = nullptr);

// The same error split by block: out[r·(cols/g) + b] = d_rbᵀ H_bb d_rb for row r's columns [b·g, (b+1)·g)
// (d = w - q; the cross-block terms of output_error left out). cols a multiple of g.
void block_output_errors(const float* W, const float* Q, int64_t rows, int64_t cols, const double* H, int64_t g,
                         double* out, ThreadPool* pool = nullptr);

// The calibration methods' one regulariser: every fit minimises tr((W - Q)(H + kRidge·mean(diag H)·I)(W - Q)ᵀ),
// the calibration text's output error plus kRidge times a plain weight error of the same scale (GPTQ's
// damping; for the diagonal methods, importance mean x² + kRidge·mean(mean x²)). Without it the rounding fits
// directions the calibration text happens to excite and loses to plain rounding on other text: on tl-8m,
// calibrated on the prose half of calib.txt and evaluated on its code/docs half, Q2_K GPTQ's mean KLD was
// 0.02446 at 0.01 (GPTQ's customary damping), 0.02294 at 0.1, 0.02026 at 0.3, 0.01948 at 1, plain rounding
// 0.02214; on tinystories-heldout (calibration on all of calib.txt) 0.02094 at 0.01, 0.02051 at 0.3, 0.02114 at 1.
inline constexpr double kRidge = 0.3;

// Upper Cholesky factor U of (H + damp·mean(diag H)·I)^-1 (row-major, H^-1 = UᵀU); dead columns (zero
// diagonal) get 1 on the diagonal. Raises damping until the factorisation succeeds.
std::vector<double> inverse_hessian_cholesky(const double* H, int64_t n, double damp = kRidge);
// The same in place of H (no second n × n matrix).
std::vector<double> inverse_hessian_cholesky(std::vector<double> H, int64_t n, double damp = kRidge);

// Quantizes W (rows × cols, row-major; cols a multiple of t's block size) into dst (rows × row size of t).
// act_order: see above (default off: the natural order).
// Rows are rounded in fixed chunks, spread over pool when given: the same bytes for any pool size.
void gptq_quantize(GgmlType t, const float* W, int64_t rows, int64_t cols, const double* H, uint8_t* dst,
                   double damp = kRidge, bool act_order = false, ThreadPool* pool = nullptr);
// The same, taking H (natural order: its factor is formed in H's memory, one n × n matrix instead of two).
void gptq_quantize(GgmlType t, const float* W, int64_t rows, int64_t cols, std::vector<double> H, uint8_t* dst,
                   double damp = kRidge, bool act_order = false, ThreadPool* pool = nullptr);

// H + ridge·mean(diag H)·I (n × n, row-major), the regularised objective the other methods fit.
std::vector<double> ridge_hessian(const double* H, int64_t n, double ridge = kRidge);
// The same in place of H (no second n × n copy).
std::vector<double> ridge_hessian(std::vector<double> H, int64_t n, double ridge = kRidge);
// v + ridge·mean(v): the diagonal methods' importance under the same regulariser.
std::vector<float> ridge_importance(std::vector<float> v, double ridge = kRidge);

}  // namespace edgeq::calibrate
