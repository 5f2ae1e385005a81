module stackblaze.cloud/probe

go 1.26.0
