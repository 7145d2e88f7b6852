// Every view of the Strategy Browser. A new view is one module in this folder that calls
// `register(...)` (core/router.js) and one import line here.
import "./runs.js";
import "./run.js";
import "./submit.js";
import "./backtests.js";
import "./compare.js";
import "./optimization.js";
import "./walkforward.js";
import "./montecarlo.js";
import "./portfolios.js";
import "./models.js";
import "./deployments.js";
import "./leaderboard.js";
