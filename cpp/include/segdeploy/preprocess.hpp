// Image in, network input out: segdeploy/preprocess.py in C++, driven by the manifest.
//   size:   static artifacts take their fixed size; dynamic ones the mmseg test policy (keep-ratio fit inside
//           resize.scale, then each side rounded to the nearest multiple of resize.round_to, ties to even like
//           Python's round()), clamped to the profile
//   resize: cv::resize INTER_LINEAR on the uint8 BGR image (the same call Python makes)
//   float inputs (NCHW): BGR -> the manifest's channel order, (x - mean) / std in float32, subtract then divide
//   uint8 inputs (NHWC, preprocessing in the graph): the resized image in the input's channel order
// A batch larger than one (static batch-N artifacts) repeats the image, as Python's validation feeds it.
#pragma once

#include <array>
#include <opencv2/core.hpp>

#include "segdeploy/manifest.hpp"
#include "segdeploy/tensor.hpp"

namespace segdeploy {

struct Size {
  int height = 0, width = 0;
};

Size fit_size(int height, int width, std::array<int, 2> scale = {2048, 512}, int multiple = 32);

struct InputPlan {
  int batch = 1;
  Size size;  // the network input's height and width
};

// The batch and size at which `manifest`'s artifact takes an image of this size.
InputPlan plan_input(const Manifest& manifest, int image_height, int image_width);

// uint8 BGR (CV_8UC3) image -> the artifact's input tensor. Throws ErrorCode::input for an empty or non-BGR image.
Tensor preprocess(const cv::Mat& bgr, const Manifest& manifest, const InputPlan& plan);
Tensor preprocess(const cv::Mat& bgr, const Manifest& manifest);

// segdeploy's image-size cap (preprocess.py's MAX_SEGMENT_PIXELS): 2^27 pixels, about 134 MP.
constexpr int64_t kMaxImagePixels = int64_t(1) << 27;

// Reads an image as uint8 BGR like cv2.imread(path, IMREAD_COLOR); throws not_found or input. Refused, as Python
// refuses them: images beyond kMaxImagePixels (from the PNG, JPEG or BMP header, before decoding), and truncated
// JPEGs (no end-of-image marker after the scan: OpenCV would fill the rest with grey and say nothing).
cv::Mat read_image(const std::string& path);

}  // namespace segdeploy
