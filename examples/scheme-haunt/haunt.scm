(use-modules (haunt site))
(site #:title "haunt")
