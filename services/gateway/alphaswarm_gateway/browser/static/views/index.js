// Every view of the Strategy Browser. A new view is one module in this folder that calls
// `register(...)` (core/router.js) and one import line here.
import "./runs.js";
import "./run.js";
import "./submit.js";
