;;; eglot-test.el --- copilot-lsp through eglot, in emacs -Q --batch -*- lexical-binding: t -*-

;; Starts the real server through `copilot-lsp-eglot-setup', opens a Python file with
;; multibyte text, and completes at point through `completion-at-point' (the server's
;; `textDocument/completion' fallback), the way a user's M-TAB or company would.
;;
;; Run: COPILOT_LSP_BIN=... COPILOT_LSP_TEST_MODEL=... \
;;   emacs -Q --batch -L editors/emacs -l editors/emacs/test/eglot-test.el
;; Exit status: 0 pass, 1 fail, 77 skipped (with the reason printed).

;;; Code:

(defvar copilot-lsp-test--failures 0)

(defun copilot-lsp-test--out (fmt &rest args)
  (princ (concat (apply #'format fmt args) "\n")))

(defun copilot-lsp-test--check (ok what &optional detail)
  (if ok
      (copilot-lsp-test--out "  ok   %s" what)
    (setq copilot-lsp-test--failures (1+ copilot-lsp-test--failures))
    (copilot-lsp-test--out "  FAIL %s%s" what (if detail (concat ": " detail) "")))
  ok)

(let ((bin (getenv "COPILOT_LSP_BIN"))
      (model (getenv "COPILOT_LSP_TEST_MODEL")))
  (unless (and bin model)
    (copilot-lsp-test--out "SKIP emacs eglot: COPILOT_LSP_BIN and COPILOT_LSP_TEST_MODEL must be set (run through .ci/editors.sh)")
    (kill-emacs 77)))

;; Debian's elpa-* packages live in /usr/share/emacs/site-lisp/elpa, which -Q leaves out.
(require 'package)
(setq package-directory-list
      (append package-directory-list '("/usr/share/emacs/site-lisp/elpa")))
(package-initialize)
(unless (require 'eglot nil t)
  (copilot-lsp-test--out "SKIP emacs eglot: eglot is not installed (apt-get install elpa-eglot)")
  (kill-emacs 77))
(require 'copilot-lsp)

(defconst copilot-lsp-test--dir (make-temp-file "copilot-lsp-eglot-" t))
(defconst copilot-lsp-test--log (expand-file-name "server.log" copilot-lsp-test--dir))

(setq copilot-lsp-server-command
      (list (getenv "COPILOT_LSP_BIN") "--log-file" copilot-lsp-test--log "--stdio"))
(setq copilot-lsp-initialization-options
      (list :model (getenv "COPILOT_LSP_TEST_MODEL")
            :temperature 0
            :maxTokens 24
            :debounceMs 0
            :postprocess (if (equal (getenv "COPILOT_LSP_TEST_POSTPROCESS") "true") t :json-false)))
(copilot-lsp-eglot-setup)
(setq eglot-connect-timeout 60
      eglot-sync-connect 60
      eglot-autoshutdown t)

(defun copilot-lsp-test--log-tail ()
  (if (file-exists-p copilot-lsp-test--log)
      (with-temp-buffer
        (insert-file-contents copilot-lsp-test--log)
        (goto-char (point-max))
        (forward-line -30)
        (buffer-substring-no-properties (point) (point-max)))
    "(no server log)"))

(defun copilot-lsp-test--finish ()
  (when (> copilot-lsp-test--failures 0)
    (copilot-lsp-test--out "--- server log tail (%s) ---\n%s---" copilot-lsp-test--log
                           (copilot-lsp-test--log-tail)))
  (ignore-errors (eglot-shutdown (eglot-current-server)))
  (copilot-lsp-test--out "emacs eglot (Emacs %s, eglot %s): %s" emacs-version
                         (or (ignore-errors (package-desc-version (cadr (assq 'eglot package-alist)))) "?")
                         (if (zerop copilot-lsp-test--failures) "PASS" "FAIL"))
  (kill-emacs (if (zerop copilot-lsp-test--failures) 0 1)))

(defun copilot-lsp-test--candidates ()
  "Candidates `completion-at-point' offers at point: (START END CANDIDATES PROPS)."
  (let ((capf (eglot-completion-at-point)))
    (when capf
      (pcase-let ((`(,start ,end ,table . ,props) capf))
        (list start end
              (all-completions (buffer-substring-no-properties start end) table)
              props)))))

(defun copilot-lsp-test--complete-until (timeout)
  "Ask for completions at point until some come or TIMEOUT seconds pass."
  (let ((deadline (+ (float-time) timeout))
        result)
    (while (and (not (and result (nth 2 result))) (< (float-time) deadline))
      (setq result (condition-case err
                       (copilot-lsp-test--candidates)
                     (error (copilot-lsp-test--out "       completion request failed: %S" err) nil)))
      (unless (nth 2 result) (sleep-for 0.5)))
    result))

(defun copilot-lsp-test--choose (result)
  "Insert the first candidate of RESULT as completion-in-region does, then run eglot's exit function."
  (pcase-let ((`(,start ,end ,cands ,props) result))
    (let ((choice (car cands)))
      (goto-char end)
      (delete-region start end)
      (insert choice)
      (funcall (plist-get props :exit-function) choice 'finished)
      choice)))

(condition-case err
    (let* ((file (expand-file-name "sample.py" copilot-lsp-test--dir)))
      (with-temp-file file
        (insert "# Grüße — 🐍 snake café\n"
                "def greet(name: str) -> str:\n"
                "    \"\"\"Say hello to ñame 🐍.\"\"\"\n"
                "    message = \"héllo, \" + name\n"
                "    return message\n\n\n"
                "def shout(name):\n"
                "    loud = \"¡hé 🐍 \" + "))
      (find-file file)
      (python-mode)
      (apply #'eglot (eglot--guess-contact))
      (copilot-lsp-test--check (eglot-current-server) "eglot connected to copilot-lsp")
      (copilot-lsp-test--check (eglot--server-capable :completionProvider)
                               "the server offers textDocument/completion (the fallback)")
      (goto-char (point-max))
      (let* ((before (buffer-string))
             (result (copilot-lsp-test--complete-until 90)))
        (when (copilot-lsp-test--check (nth 2 result)
                                       "completion-at-point gets candidates after multibyte text"
                                       (format "%S" result))
          (copilot-lsp-test--out "       candidates: %S" (mapcar #'substring-no-properties (seq-take (nth 2 result) 3)))
          (let ((choice (copilot-lsp-test--choose result)))
            (copilot-lsp-test--check (and (not (string= (buffer-string) before))
                                          (string-prefix-p
                                           (substring before 0 (1+ (string-match-p "\n[^\n]*\\'" before)))
                                           (buffer-string)))
                                     (format "choosing %S changes the buffer after the cursor only" (substring-no-properties choice))
                                     (buffer-string))
            (copilot-lsp-test--out "       last line now: %S"
                                   (buffer-substring-no-properties (line-beginning-position) (line-end-position))))))
      ;; Mid-word: candidates must match what eglot filters on (the symbol before point).
      (goto-char (point-max))
      (insert "\n    return na")
      (let ((result (copilot-lsp-test--complete-until 60)))
        (copilot-lsp-test--out "       mid-word (after \"na\"): %S"
                               (if result (mapcar #'substring-no-properties (seq-take (nth 2 result) 3)) "no answer"))
        (copilot-lsp-test--check (nth 2 result)
                                 "mid-word completion survives eglot's prefix filter"
                                 "the items' filterText/insertText do not start with the word before point")))
  (error
   (copilot-lsp-test--check nil "test ran without error" (format "%S" err))))

(copilot-lsp-test--finish)
;;; eglot-test.el ends here
