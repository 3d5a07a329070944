printfn "hello"
