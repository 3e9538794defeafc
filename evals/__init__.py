"""diffgemma.evals: quality suites and engine benchmarks."""
