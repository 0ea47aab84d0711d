;;; package-test.el --- copilot-lsp.el compiles cleanly and registers with lsp-mode -*- lexical-binding: t -*-

;; Byte-compiles copilot-lsp.el with warnings as errors, then loads lsp-mode (Debian's
;; elpa-lsp-mode) and checks that `copilot-lsp-lsp-mode-setup' registers an add-on client
;; with the right command, activation and options. It does not start the server:
;; eglot-test.el covers a live session.
;;
;; Run: emacs -Q --batch -L editors/emacs -l editors/emacs/test/package-test.el
;; Exit status: 0 pass, 1 fail, 77 skipped (with the reason printed).

;;; Code:

(defvar copilot-lsp-test--failures 0)

(defun copilot-lsp-test--check (ok what &optional detail)
  (if ok
      (princ (format "  ok   %s\n" what))
    (setq copilot-lsp-test--failures (1+ copilot-lsp-test--failures))
    (princ (format "  FAIL %s%s\n" what (if detail (concat ": " detail) ""))))
  ok)

(require 'bytecomp)
(let* ((src (locate-library "copilot-lsp.el"))
       (copy (expand-file-name "copilot-lsp.el" (make-temp-file "copilot-lsp-compile-" t)))
       (byte-compile-error-on-warn t)
       (warnings nil))
  (copy-file src copy)
  (copilot-lsp-test--check
   (condition-case err
       (with-current-buffer (get-buffer-create "*Compile-Log*")
         (prog1 (byte-compile-file copy)
           (setq warnings (string-trim (buffer-string)))))
     (error (setq warnings (format "%S" err)) nil))
   "copilot-lsp.el byte-compiles without warnings"
   warnings))

(require 'package)
(setq package-directory-list
      (append package-directory-list '("/usr/share/emacs/site-lisp/elpa")))
(package-initialize)
(unless (require 'lsp-mode nil t)
  (princ "SKIP emacs lsp-mode: lsp-mode is not installed (apt-get install elpa-lsp-mode)\n")
  (kill-emacs 77))
(require 'copilot-lsp)

(setq copilot-lsp-server-command '("/opt/copilot-lsp/bin/copilot-lsp" "--stdio")
      copilot-lsp-initialization-options '(:model "/models/tiny" :temperature 0.1))
(copilot-lsp-lsp-mode-setup)

(let ((client (gethash 'copilot-lsp lsp-clients)))
  (when (copilot-lsp-test--check client "copilot-lsp is registered with lsp-mode")
    (copilot-lsp-test--check (lsp--client-add-on? client) "it is an add-on (runs beside the usual server)")
    (let ((activate (lsp--client-activation-fn client)))
      (copilot-lsp-test--check (funcall activate "/tmp/a.py" 'python-mode) "activates in python-mode")
      (copilot-lsp-test--check (not (funcall activate "/tmp/a.txt" 'text-mode)) "stays out of text-mode"))
    (let ((test? (plist-get (lsp--client-new-connection client) :test?)))
      (copilot-lsp-test--check (not (funcall test?)) "reports a missing binary as not installed")
      (let ((copilot-lsp-server-command '("true" "--stdio")))
        (copilot-lsp-test--check (funcall test?) "reads copilot-lsp-server-command when it connects")))
    (let ((opts (funcall (lsp--client-initialization-options client))))
      (copilot-lsp-test--check
       (equal opts '(:model "/models/tiny" :temperature 0.1 :completionFallback t))
       "initializationOptions: the user's plist plus completionFallback"
       (format "%S" opts))
      (copilot-lsp-test--check
       (equal (json-parse-string (json-serialize opts) :object-type 'plist)
              '(:model "/models/tiny" :temperature 0.1 :completionFallback t))
       "the options serialize to the server's camelCase JSON"))))

(princ (format "emacs package (lsp-mode %s): %s\n"
               (or (ignore-errors (package-desc-version (cadr (assq 'lsp-mode package-alist)))) "?")
               (if (zerop copilot-lsp-test--failures) "PASS" "FAIL")))
(kill-emacs (if (zerop copilot-lsp-test--failures) 0 1))
;;; package-test.el ends here
