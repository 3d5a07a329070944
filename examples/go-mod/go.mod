module example.com/go-mod

go 1.19
