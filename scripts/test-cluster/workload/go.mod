module stackblaze.test/workload

go 1.26.0
