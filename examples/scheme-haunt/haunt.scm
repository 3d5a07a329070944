;; The site: one page, written to site/ by `haunt build`.
(use-modules (haunt site)
             (haunt artifact)
             (haunt html))

(define (index-page site posts)
  (serialized-artifact "index.html"
                       `((doctype "html")
                         (html (head (title "haunt"))
                               (body (h1 "Hello from haunt"))))
                       sxml->html))

(site #:title "haunt"
      #:build-directory "site"
      #:builders (list index-page))
