// The OpenMP loop over independent flows shared by the drivers.
#pragma once

#include <exception>

#include "sadfast/common.hpp"

namespace sadfast {

// Runs body(k, scratch) for k in [0, K) on OpenMP threads, one Scratch per thread made by
// make_scratch(), flows handed out dynamically (a finished flow frees its thread). The first
// exception is rethrown after the loop.
template <class MakeScratch, class Body>
void parallel_flows(Index K, MakeScratch&& make_scratch, Body&& body) {
  std::exception_ptr error;
#pragma omp parallel
  {
    try {
      auto sc = make_scratch();
#pragma omp for schedule(dynamic, 1)
      for (Index kk = 0; kk < K; ++kk) {
        try {
          body(kk, sc);
        } catch (...) {
#pragma omp critical(sadfast_flow_error)
          if (!error) error = std::current_exception();
        }
      }
    } catch (...) {
#pragma omp critical(sadfast_flow_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace sadfast
