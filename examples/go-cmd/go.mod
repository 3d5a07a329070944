module example.com/go-cmd

go 1.22.5

toolchain go1.23.4
