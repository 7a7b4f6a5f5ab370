// Network output to mask and pictures: segdeploy/preprocess.py's logits_to_mask and colorize in C++.
#pragma once

#include <array>
#include <cstdint>
#include <opencv2/core.hpp>
#include <vector>

#include "segdeploy/preprocess.hpp"
#include "segdeploy/tensor.hpp"

namespace segdeploy {

// One image's (K, h, w) float logits -> (H, W) class indices: a bilinear resize to `size` with torch's
// F.interpolate arithmetic (float weights, align_corners as given), then argmax over classes (the first maximum
// wins, as torch.argmax). CV_8U when K <= 256, else CV_16U.
cv::Mat logits_to_mask(const float* logits, int classes, int height, int width, Size size, bool align_corners);

// Batch element `index` of an (N, K, h, w) logits tensor (float32 or float16).
cv::Mat logits_to_mask(const Tensor& logits, Size size, bool align_corners, int index = 0);

// Batch element `index` of an in-graph (N, H, W) mask (uint8, int32 or int64) at `size`: nearest-neighbour when
// the sizes differ (labels cannot be interpolated). CV_8U when num_classes <= 256, else CV_16U.
cv::Mat mask_from_output(const Tensor& mask, int num_classes, Size size, int index = 0);

// (H, W) class mask -> uint8 BGR colours from an RGB palette (indices past the palette take its last colour).
cv::Mat colorize(const cv::Mat& mask, const std::vector<std::array<uint8_t, 3>>& palette);

// The image with the colour mask blended over it (alpha: the mask's weight).
cv::Mat overlay(const cv::Mat& bgr, const cv::Mat& colours, double alpha = 0.5);

}  // namespace segdeploy
