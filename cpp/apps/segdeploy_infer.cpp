// segdeploy-infer: segment an image, a folder of images or a video with an artifact segdeploy wrote, and print
// each image's latency.
//
//   segdeploy-infer ARTIFACT IMAGE|DIR|VIDEO -o OUT [--overlay] [--device cpu|cuda|tensorrt] [--threads N]
//                   [--save-tensors] [--force]
//
// Images: OUT/<name>.png is the class-index mask at the image's size (8-bit, 16-bit past 256 classes); --overlay
// adds OUT/<name>_overlay.jpg; --save-tensors adds the network input and logits as .npy. Videos: OUT/<name>.avi
// (Motion-JPEG) with the colour masks, or the overlays with --overlay. Bad input: one line and exit code 2.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

#ifdef SEGDEPLOY_HAVE_VIDEOIO
#include <opencv2/videoio.hpp>
#endif

#include "segdeploy/segmenter.hpp"

namespace fs = std::filesystem;
using segdeploy::Error;
using segdeploy::ErrorCode;

namespace {

const std::set<std::string> kImageSuffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"};
const std::set<std::string> kVideoSuffixes = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"};

struct Args {
  std::string artifact, input, out;
  bool overlay = false, save_tensors = false, force = false;
  segdeploy::Options options;
};

const char* kUsage =
    "usage: segdeploy-infer ARTIFACT IMAGE|DIR|VIDEO -o OUT [--overlay] [--device cpu|cuda|tensorrt] "
    "[--threads N] [--save-tensors] [--force]";

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(ErrorCode::invalid_argument, arg + " needs a value");
      return argv[++i];
    };
    if (arg == "-o" || arg == "--output") a.out = value();
    else if (arg == "--overlay") a.overlay = true;
    else if (arg == "--save-tensors") a.save_tensors = true;
    else if (arg == "--force") a.force = true;
    else if (arg == "--device") a.options.device = value();
    else if (arg == "--threads") {
      const std::string v = value();
      try {
        size_t used = 0;
        a.options.threads = std::stoi(v, &used);
        if (used != v.size() || a.options.threads < 0) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        throw Error(ErrorCode::invalid_argument, "--threads must be a whole number >= 0, not '" + v + "'");
      }
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage << "\n";
      std::exit(0);
    } else if (!arg.empty() && arg[0] == '-') {
      throw Error(ErrorCode::invalid_argument, "unknown option " + arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2 || a.out.empty())
    throw Error(ErrorCode::invalid_argument, "expected ARTIFACT, one input and -o OUT");
  a.artifact = positional[0], a.input = positional[1];
  return a;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

// Writes through a temporary file and a rename, and never replaces a file without --force.
class Writer {
 public:
  Writer(fs::path dir, bool force) : dir_(std::move(dir)), force_(force) {}

  fs::path target(const std::string& name) const {
    const fs::path path = dir_ / name;
    if (fs::exists(path) && !force_)
      throw Error(ErrorCode::invalid_argument, path.string() + " exists; pass --force to overwrite it");
    return path;
  }

  void image(const std::string& name, const cv::Mat& image) const {
    const fs::path path = target(name);
    const fs::path tmp = temporary(path);
    if (!cv::imwrite(tmp.string(), image)) throw Error(ErrorCode::input, "cannot write " + path.string());
    fs::rename(tmp, path);
  }

  // float32/uint8 tensors as NumPy .npy (version 1.0)
  void npy(const std::string& name, const segdeploy::Tensor& t) const {
    const fs::path path = target(name);
    const char* descr = t.dtype() == segdeploy::DType::float32 ? "<f4"
                        : t.dtype() == segdeploy::DType::float16 ? "<f2"
                        : t.dtype() == segdeploy::DType::uint8   ? "|u1"
                        : t.dtype() == segdeploy::DType::int64   ? "<i8"
                                                                 : "<i4";
    std::string shape;
    for (int64_t d : t.shape()) shape += std::to_string(d) + ", ";
    std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + shape + "), }";
    header.append(63 - (10 + header.size()) % 64, ' ').push_back('\n');
    const fs::path tmp = temporary(path);
    {
      std::ofstream f(tmp, std::ios::binary);
      const uint16_t n = uint16_t(header.size());
      f.write("\x93NUMPY\x01\x00", 8);
      f.put(char(n & 0xff)).put(char(n >> 8));
      f.write(header.data(), std::streamsize(header.size()));
      f.write(static_cast<const char*>(t.data()), std::streamsize(t.nbytes()));
      if (!f) throw Error(ErrorCode::input, "cannot write " + path.string());
    }
    fs::rename(tmp, path);
  }

  const fs::path& dir() const { return dir_; }

 private:
  static fs::path temporary(const fs::path& path) {
    return path.parent_path() / ("." + path.stem().string() + ".tmp" + std::to_string(::getpid()) +
                                 path.extension().string());
  }
  fs::path dir_;
  bool force_;
};

// The output folder and the parents it needed, made now; on the way out, those still empty are removed again: a
// run that failed before its first output leaves no folder behind.
class MadeFolders {
 public:
  explicit MadeFolders(const fs::path& folder) {
    std::error_code ec;
    for (fs::path p = fs::absolute(folder, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
      made_.push_back(p);
      if (p == p.parent_path()) break;
    }
    fs::create_directories(folder, ec);
    if (ec || !fs::is_directory(folder))
      throw Error(ErrorCode::invalid_argument, "cannot create the output folder " + folder.string());
  }
  ~MadeFolders() {
    std::error_code ec;
    for (const fs::path& p : made_)  // deepest first
      if (fs::is_directory(p, ec) && fs::is_empty(p, ec)) fs::remove(p, ec);
  }

 private:
  std::vector<fs::path> made_;
};

std::vector<fs::path> list_images(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && kImageSuffixes.count(lower(entry.path().extension().string())))
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(ErrorCode::input, "no images in " + dir.string());
  return files;
}

double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double pos = q * double(values.size() - 1);
  const size_t lo = size_t(pos), hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (pos - double(lo));
}

struct Stats {
  std::vector<double> total, infer;
  void add(double read_ms, const segdeploy::Timing& t) {
    total.push_back(read_ms + t.total_ms());
    infer.push_back(t.infer_ms);
  }
  void print(const char* unit) const {
    if (total.empty()) return;
    const double mean = std::accumulate(total.begin(), total.end(), 0.0) / double(total.size());
    const double infer_mean = std::accumulate(infer.begin(), infer.end(), 0.0) / double(infer.size());
    std::printf("%zu %s: end to end mean %.1f ms, p50 %.1f ms, p90 %.1f ms; inference mean %.1f ms\n", total.size(),
                unit, mean, percentile(total, 0.5), percentile(total, 0.9), infer_mean);
  }
};

void print_line(const std::string& name, const cv::Mat& image, const segdeploy::Result& r, double read_ms) {
  std::printf("%s  %dx%d -> %dx%d  read %.1f ms  preprocess %.1f ms  infer %.1f ms  postprocess %.1f ms  "
              "total %.1f ms\n",
              name.c_str(), image.rows, image.cols, r.input_size.height, r.input_size.width, read_ms,
              r.timing.preprocess_ms, r.timing.infer_ms, r.timing.postprocess_ms, read_ms + r.timing.total_ms());
  std::fflush(stdout);
}

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

void run_images(segdeploy::Segmenter& seg, const std::vector<fs::path>& files, const Args& args, const Writer& out) {
  Stats stats;
  for (const fs::path& file : files) {
    const std::string stem = file.stem().string();
    out.target(stem + ".png");  // refuse before spending the inference
    const auto t0 = std::chrono::steady_clock::now();
    const cv::Mat image = segdeploy::read_image(file.string());
    const double read_ms = ms_between(t0, std::chrono::steady_clock::now());
    segdeploy::Result r = seg.segment(image);
    print_line(file.filename().string(), image, r, read_ms);
    stats.add(read_ms, r.timing);
    out.image(stem + ".png", r.mask);
    if (args.overlay)
      out.image(stem + "_overlay.jpg",
                segdeploy::overlay(image, segdeploy::colorize(r.mask, seg.manifest().model.palette)));
    if (args.save_tensors) {
      out.npy(stem + "_input.npy", seg.prepare(image));
      if (!r.logits.empty()) out.npy(stem + "_logits.npy", r.logits);
    }
  }
  stats.print(files.size() == 1 ? "image" : "images");
}

// While alive, what C libraries write to stderr (FFmpeg's complaints about a damaged video) goes nowhere: the tool's
// own error line says what went wrong, once (Python's preprocess.captured_c_stderr does the same).
class QuietStderr {
 public:
  QuietStderr() {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int null = ::open("/dev/null", O_WRONLY);
    if (saved_ >= 0 && null >= 0) ::dup2(null, 2);
    if (null >= 0) ::close(null);
  }
  ~QuietStderr() {
    if (saved_ >= 0) {
      ::dup2(saved_, 2);
      ::close(saved_);
    }
  }

 private:
  int saved_ = -1;
};

// Removes a file when it goes out of scope unless released: a failed run leaves no half-written video.
class TempFile {
 public:
  explicit TempFile(fs::path path) : path_(std::move(path)) {}
  ~TempFile() {
    std::error_code ec;
    if (!path_.empty()) fs::remove(path_, ec);
  }
  void release() { path_.clear(); }

 private:
  fs::path path_;
};

void run_video(segdeploy::Segmenter& seg, const fs::path& file, const Args& args, const Writer& out) {
#ifdef SEGDEPLOY_HAVE_VIDEOIO
  cv::VideoCapture capture;
  {
    const QuietStderr quiet;
    capture.open(file.string());
  }
  if (!capture.isOpened()) throw Error(ErrorCode::input, "cannot open video " + file.string());
  const fs::path path = out.target(file.stem().string() + ".avi");
  const fs::path tmp = path.parent_path() / ("." + path.stem().string() + ".tmp" + std::to_string(::getpid()) + ".avi");
  TempFile guard(tmp);
  const double fps = capture.get(cv::CAP_PROP_FPS) > 0 ? capture.get(cv::CAP_PROP_FPS) : 25.0;
  const int64_t listed = int64_t(capture.get(cv::CAP_PROP_FRAME_COUNT));
  cv::VideoWriter writer;
  Stats stats;
  cv::Mat frame;
  for (int index = 0;; ++index) {
    const auto t0 = std::chrono::steady_clock::now();
    bool got = false;
    {
      const QuietStderr quiet;
      got = capture.read(frame);
    }
    if (!got || frame.empty()) break;
    const double read_ms = ms_between(t0, std::chrono::steady_clock::now());
    segdeploy::Result r = seg.segment(frame);
    print_line(file.filename().string() + " frame " + std::to_string(index), frame, r, read_ms);
    stats.add(read_ms, r.timing);
    cv::Mat colours = segdeploy::colorize(r.mask, seg.manifest().model.palette);
    if (!writer.isOpened() &&
        !writer.open(tmp.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps, frame.size()))
      throw Error(ErrorCode::input, "cannot write " + path.string());
    writer.write(args.overlay ? segdeploy::overlay(frame, colours) : colours);
  }
  if (stats.total.empty()) throw Error(ErrorCode::input, "no frames could be read from " + file.string());
  // the container's frame count is an index for these (exact), an estimate elsewhere (give or take one): fewer
  // frames than it lists is a truncated or damaged file, refused as media.py::video_shortfall refuses it
  const std::string suffix = lower(file.extension().string());
  const int64_t slack = (suffix == ".avi" || suffix == ".mp4" || suffix == ".mov" || suffix == ".m4v") ? 0 : 1;
  const int64_t decoded = int64_t(stats.total.size());
  if (listed > 0 && decoded < listed - slack)
    throw Error(ErrorCode::input, file.string() + " is truncated or damaged: OpenCV decoded " +
                                      std::to_string(decoded) + " of the " + std::to_string(listed) +
                                      " frames its container lists (" + std::to_string(listed - decoded) +
                                      " lost); nothing was written");
  writer.release();
  fs::rename(tmp, path);
  guard.release();
  stats.print("frames");
#else
  (void)seg, (void)args, (void)out;
  throw Error(ErrorCode::unsupported, file.string() + " is a video, and this build has no OpenCV videoio");
#endif
}

int run(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  segdeploy::Segmenter seg(args.artifact, args.options);
  const segdeploy::Manifest& m = seg.manifest();
  std::printf("%s: %s, %d classes, input %s %s (%s), on %s\n", args.artifact.c_str(), m.model.name.c_str(),
              m.model.num_classes, m.input().name.c_str(), m.input().dtype.c_str(),
              m.profile.is_static() ? "static" : "dynamic", seg.backend().c_str());
  if (m.validation_passed.has_value() && !*m.validation_passed)
    std::fprintf(stderr, "segdeploy-infer: warning: %s: its manifest records that its validation against PyTorch "
                         "FAILED at export; its outputs may be wrong\n", args.artifact.c_str());
  const fs::path input(args.input);
  std::error_code ec;
  if (!fs::exists(input, ec)) throw Error(ErrorCode::not_found, "input not found: " + args.input);
  const MadeFolders made(args.out);
  const Writer out(args.out, args.force);
  if (fs::is_directory(input)) run_images(seg, list_images(input), args, out);
  else if (kVideoSuffixes.count(lower(input.extension().string()))) run_video(seg, input, args, out);
  else run_images(seg, {input}, args, out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "segdeploy-infer: error: %s\n", e.what());
    if (e.code() == ErrorCode::invalid_argument) std::fprintf(stderr, "%s\n", kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "segdeploy-infer: error: %s\n", e.what());
    return 2;
  }
}
