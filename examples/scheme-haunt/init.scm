;; Serves the site haunt built (site/) on $PORT: the start command Nixpacks
;; gives Haunt sites is `guile init.scm`.
(use-modules (web server)
             (web request)
             (web response)
             (web uri)
             (ice-9 binary-ports))

(define root "site")

(define (content-type file)
  (cond ((string-suffix? ".html" file) '(text/html (charset . "utf-8")))
        ((string-suffix? ".css" file) '(text/css))
        ((string-suffix? ".js" file) '(text/javascript))
        (else '(application/octet-stream))))

;; The file under root that a request path names, or #f.
(define (file-for path)
  (let ((file (string-append root path
                             (if (string-suffix? "/" path) "index.html" ""))))
    (and (not (string-contains path ".."))
         (file-exists? file)
         (not (file-is-directory? file))
         file)))

(define (handler request body)
  (let ((file (file-for (uri-path (request-uri request)))))
    (if file
        (values (build-response #:headers `((content-type . ,(content-type file))))
                (call-with-input-file file get-bytevector-all #:binary #t))
        (values (build-response #:code 404
                                #:headers '((content-type . (text/plain))))
                "not found\n"))))

(define port (string->number (or (getenv "PORT") "8080")))
(format #t "listening on ~a~%" port)
(run-server handler 'http `(#:addr ,INADDR_ANY #:port ,port))
