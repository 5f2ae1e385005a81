module stackblaze/benchmarks/tabs

go 1.26
