// Explicit Runge-Kutta tableaus with an embedded error estimate and a continuous extension, as
// data. A new method is a new table; the stepper in src/flows.cpp reads only these fields.
#pragma once

#include "sadfast/common.hpp"

namespace sadfast {

struct ExplicitTableau {
  static constexpr int kMaxStages = 7;
  static constexpr int kMaxDense = 4;
  const char* name;
  int stages;        // function evaluations per step, counting the FSAL one (b has stages-1 entries)
  int error_order;   // order of the embedded (lower) method: step factor exponent -1/(error_order+1)
  int dense_order;   // number of columns of p: y(t + x h) = y + h sum_j (sum_q p[j][q] x^(q+1)) k_j
  Real c[kMaxStages];
  Real a[kMaxStages][kMaxStages];
  Real b[kMaxStages];
  Real e[kMaxStages];  // error estimate: h sum_j e[j] k_j, over all stages (FSAL included)
  Real p[kMaxStages][kMaxDense];
};

// Dormand-Prince 5(4) with FSAL and the 4th-order continuous extension of Shampine (1986), as in
// scipy.integrate.RK45.
inline constexpr ExplicitTableau kDormandPrince54 = {
    "dopri5",
    7,
    4,
    4,
    {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0},
    {{0, 0, 0, 0, 0, 0, 0},
     {1.0 / 5, 0, 0, 0, 0, 0, 0},
     {3.0 / 40, 9.0 / 40, 0, 0, 0, 0, 0},
     {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0, 0},
     {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0, 0},
     {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0, 0},
     {0, 0, 0, 0, 0, 0, 0}},
    {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0},
    {-71.0 / 57600, 0, 71.0 / 16695, -71.0 / 1920, 17253.0 / 339200, -22.0 / 525, 1.0 / 40},
    {{1, -8048581381.0 / 2820520608, 8663915743.0 / 2820520608, -12715105075.0 / 11282082432},
     {0, 0, 0, 0},
     {0, 131558114200.0 / 32700410799, -68118460800.0 / 10900136933, 87487479700.0 / 32700410799},
     {0, -1754552775.0 / 470086768, 14199869525.0 / 1410260304, -10690763975.0 / 1880347072},
     {0, 127303824393.0 / 49829197408, -318862633887.0 / 49829197408, 701980252875.0 / 199316789632},
     {0, -282668133.0 / 205662961, 2019193451.0 / 616988883, -1453857185.0 / 822651844},
     {0, 40617522.0 / 29380423, -110615467.0 / 29380423, 69997945.0 / 29380423}},
};

// Tsitouras 5(4) (Ch. Tsitouras, Comput. Math. Appl. 62, 2011): FSAL, 7 stages, coefficients
// chosen to minimize the 5th-order principal error without the simplifying assumptions; its
// 4th-order continuous extension in the expanded form of OrdinaryDiffEq.jl / diffrax (the
// polynomials equal b at x = 1). The error estimate is h sum (b - bhat) k.
inline constexpr ExplicitTableau kTsitouras54 = {
    "tsit5",
    7,
    4,
    4,
    {0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0},
    {{0, 0, 0, 0, 0, 0, 0},
     {0.161, 0, 0, 0, 0, 0, 0},
     {-0.008480655492356989, 0.335480655492357, 0, 0, 0, 0, 0},
     {2.8971530571054935, -6.359448489975075, 4.3622954328695815, 0, 0, 0, 0},
     {5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525, 0, 0, 0},
     {5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383, 0, 0},
     {0, 0, 0, 0, 0, 0, 0}},
    {0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774, 0},
    {0.0017800110522257714, 0.0008164344596567469, -0.007880878010261995, 0.1447110071732629, -0.5823571654525552,
     0.45808210592918697, -1.0 / 66},
    {{1, -2.763706197274826, 2.9132554618219126, -1.0530884977290216},
     {0, 0.13169999999999998, -0.2234, 0.1017},
     {0, 3.930296236894751, -5.941033872131505, 2.490627285651253},
     {0, -12.411077166933676, 30.338188630282318, -16.548102889244902},
     {0, 37.50931341651104, -88.1789048947664, 47.37952196281928},
     {0, -27.896526289197286, 65.09189467479368, -34.87065786149661},
     {0, 1.5, -4.0, 2.5}},
};

}  // namespace sadfast
