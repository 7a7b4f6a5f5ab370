/* libsegdeploy's C API: for C and for other languages' foreign-function interfaces (ctypes, cgo, JNI, P/Invoke).
 *
 *   segdeploy_segmenter* seg = NULL;
 *   if (segdeploy_create("cgrseg_t_512x512.onnx", NULL, &seg) != SEGDEPLOY_OK)
 *     fprintf(stderr, "%s\n", segdeploy_last_error());
 *   segdeploy_result* res = NULL;
 *   if (segdeploy_run_file(seg, "photo.jpg", &res) == SEGDEPLOY_OK) {
 *     segdeploy_mask mask;
 *     segdeploy_result_mask(res, &mask);   // mask.data: mask.height x mask.width labels
 *     segdeploy_release(res);
 *   }
 *   segdeploy_destroy(seg);
 *
 * Every function returns a status; on failure segdeploy_last_error() gives one line saying why (per thread, valid
 * until the thread's next failing call). No function throws or aborts on bad input. A segmenter may be used by one
 * thread at a time; results are independent of their segmenter and outlive it.
 */
#ifndef SEGDEPLOY_SEGDEPLOY_H
#define SEGDEPLOY_SEGDEPLOY_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SEGDEPLOY_API __declspec(dllexport)
#else
#define SEGDEPLOY_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The values of segdeploy::ErrorCode, plus OK. */
typedef enum segdeploy_status {
  SEGDEPLOY_OK = 0,
  SEGDEPLOY_ERR_INVALID_ARGUMENT = 1, /* a null pointer, a bad size, an unknown option value */
  SEGDEPLOY_ERR_NOT_FOUND = 2,        /* a file that does not exist */
  SEGDEPLOY_ERR_ARTIFACT = 3,         /* an artifact or manifest that cannot be read or is inconsistent */
  SEGDEPLOY_ERR_SCHEMA_VERSION = 4,   /* a manifest of another schema version */
  SEGDEPLOY_ERR_INCOMPATIBLE = 5,     /* a TensorRT engine built for another TensorRT or GPU */
  SEGDEPLOY_ERR_UNSUPPORTED = 6,      /* a backend or execution provider this build or machine lacks */
  SEGDEPLOY_ERR_INPUT = 7,            /* an unreadable image, or a tensor of the wrong shape or type */
  SEGDEPLOY_ERR_BACKEND = 8,          /* the inference runtime failed */
  SEGDEPLOY_ERR_INTERNAL = 9          /* out of memory, or a bug */
} segdeploy_status;

typedef struct segdeploy_segmenter segdeploy_segmenter;
typedef struct segdeploy_result segdeploy_result;

typedef struct segdeploy_options {
  const char* device; /* "cpu" (NULL means cpu), "cuda" or "tensorrt" */
  int device_id;
  int threads; /* ONNX Runtime intra-op threads; 0: its default */
} segdeploy_options;

typedef struct segdeploy_mask {
  int32_t height, width;
  int32_t bytes_per_label; /* 1 (uint8, <= 256 classes) or 2 (uint16) */
  const void* data;        /* height * width labels, row-major, owned by the result */
} segdeploy_mask;

typedef struct segdeploy_logits {
  int64_t shape[4];   /* N, K, h, w */
  const float* data;  /* owned by the result */
} segdeploy_logits;

typedef struct segdeploy_timing {
  double preprocess_ms, infer_ms, postprocess_ms;
} segdeploy_timing;

SEGDEPLOY_API const char* segdeploy_version(void);
SEGDEPLOY_API const char* segdeploy_last_error(void);
SEGDEPLOY_API const char* segdeploy_status_name(segdeploy_status status);

/* Opens an artifact (.onnx with its manifest, or a segdeploy .engine). options may be NULL. */
SEGDEPLOY_API segdeploy_status segdeploy_create(const char* artifact, const segdeploy_options* options,
                                                segdeploy_segmenter** out);
SEGDEPLOY_API void segdeploy_destroy(segdeploy_segmenter* segmenter); /* NULL is fine */

/* The artifact's manifest as JSON text (owned by the segmenter), its class count, and class i's name and RGB. */
SEGDEPLOY_API const char* segdeploy_manifest_json(const segdeploy_segmenter* segmenter);
SEGDEPLOY_API int32_t segdeploy_num_classes(const segdeploy_segmenter* segmenter);
SEGDEPLOY_API segdeploy_status segdeploy_class_info(const segdeploy_segmenter* segmenter, int32_t index,
                                                    const char** name, uint8_t rgb[3]);

/* Segments a uint8 BGR image (height x width x 3, rows `stride` bytes apart; 0 means width * 3). */
SEGDEPLOY_API segdeploy_status segdeploy_run(segdeploy_segmenter* segmenter, const uint8_t* bgr, int32_t height,
                                             int32_t width, size_t stride, segdeploy_result** out);
/* Reads the image at `path` (like cv2.imread) and segments it. */
SEGDEPLOY_API segdeploy_status segdeploy_run_file(segdeploy_segmenter* segmenter, const char* path,
                                                  segdeploy_result** out);
SEGDEPLOY_API void segdeploy_release(segdeploy_result* result); /* NULL is fine */

SEGDEPLOY_API segdeploy_status segdeploy_result_mask(const segdeploy_result* result, segdeploy_mask* mask);
/* SEGDEPLOY_ERR_UNSUPPORTED for artifacts that output masks instead of logits. */
SEGDEPLOY_API segdeploy_status segdeploy_result_logits(const segdeploy_result* result, segdeploy_logits* logits);
SEGDEPLOY_API segdeploy_status segdeploy_result_timing(const segdeploy_result* result, segdeploy_timing* timing);

#ifdef __cplusplus
}
#endif

#endif /* SEGDEPLOY_SEGDEPLOY_H */
