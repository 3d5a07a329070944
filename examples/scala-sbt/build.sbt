enablePlugins(JavaAppPackaging)
executableScriptName := "main"
