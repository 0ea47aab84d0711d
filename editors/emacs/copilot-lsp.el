;;; copilot-lsp.el --- Local StarCoder completions from copilot-lsp, for eglot and lsp-mode -*- lexical-binding: t -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "27.1"))
;; Keywords: languages, tools, convenience
;; SPDX-License-Identifier: MIT

;;; Commentary:

;; Registers the `copilot-lsp' language server with eglot and with lsp-mode.
;;
;; eglot has no inline (ghost text) completion: the server's `textDocument/completion'
;; fallback feeds `completion-at-point' (and so company or corfu).  lsp-mode runs it as an
;; add-on server beside your usual one; lsp-mode versions with `lsp-inline-completion-mode'
;; can also show its inline completions.
;;
;;   (require 'copilot-lsp)
;;   (setq copilot-lsp-initialization-options '(:model "bigcode/tiny_starcoder_py"))
;;   (copilot-lsp-eglot-setup)      ; then M-x eglot in a buffer of `copilot-lsp-modes'
;;   ;; or
;;   (copilot-lsp-lsp-mode-setup)   ; then M-x lsp
;;
;; See README.md beside this file.

;;; Code:

(defgroup copilot-lsp nil
  "Completions from a local StarCoder model through the copilot-lsp language server."
  :group 'tools
  :prefix "copilot-lsp-")

(defcustom copilot-lsp-server-command '("copilot-lsp" "--stdio")
  "Command line that starts the server: the program, then its arguments.
Add \"--log-file\" \"/path/to/log\" before \"--stdio\" to keep the
server's log in a file."
  :type '(repeat string))

(defcustom copilot-lsp-initialization-options nil
  "Server options, as a plist with the server's camelCase keys.
For example (:model \"/path/to/checkpoint\" :temperature 0.2 :maxTokens 64
:debounceMs 150).  Use `:json-false' for false.  `completionFallback' is turned
on for you: eglot shows completions through `completion-at-point' only."
  :type '(plist :key-type symbol :value-type sexp))

(defcustom copilot-lsp-modes
  '(python-mode python-ts-mode rust-mode rust-ts-mode js-mode js-ts-mode
    typescript-mode typescript-ts-mode go-mode go-ts-mode c-mode c-ts-mode
    c++-mode c++-ts-mode java-mode java-ts-mode sh-mode bash-ts-mode lua-mode)
  "Major modes in which the server runs."
  :type '(repeat symbol))

(defun copilot-lsp-server-options ()
  "The `initializationOptions' plist: the user's, with the completion fallback on."
  (let ((opts (copy-sequence copilot-lsp-initialization-options)))
    (unless (plist-member opts :completionFallback)
      (setq opts (plist-put opts :completionFallback t)))
    opts))

(defun copilot-lsp--eglot-contact (&optional _interactive)
  "The eglot contact: the command line and the initialization options."
  (append copilot-lsp-server-command
          (list :initializationOptions (copilot-lsp-server-options))))

(defvar eglot-server-programs)
(defvar eglot-workspace-configuration)

;;;###autoload
(defun copilot-lsp-eglot-setup ()
  "Make eglot use copilot-lsp in `copilot-lsp-modes'.
eglot runs one server per major mode: in these modes copilot-lsp replaces the
language's usual server for this Emacs session."
  (with-eval-after-load 'eglot
    (add-to-list 'eglot-server-programs
                 (cons copilot-lsp-modes #'copilot-lsp--eglot-contact))))

(defvar lsp-clients)
(declare-function lsp-register-client "lsp-mode" (client))
(declare-function make-lsp-client "lsp-mode" (&rest args))
(declare-function lsp-stdio-connection "lsp-mode" (command &optional test-command))

;;;###autoload
(defun copilot-lsp-lsp-mode-setup ()
  "Register copilot-lsp with lsp-mode, as an add-on beside the usual server."
  (with-eval-after-load 'lsp-mode
    (lsp-register-client
     (make-lsp-client
      :new-connection (lsp-stdio-connection (lambda () copilot-lsp-server-command))
      :activation-fn (lambda (_file-name mode)
                       (seq-some (lambda (m) (provided-mode-derived-p mode m)) copilot-lsp-modes))
      :add-on? t
      :priority -1
      :server-id 'copilot-lsp
      :initialization-options #'copilot-lsp-server-options))))

;;;###autoload
(defun copilot-lsp-update-settings (plist)
  "Merge PLIST into the server options and send them to the eglot server.
PLIST uses the server's camelCase keys, e.g. (:temperature 0.1)."
  (interactive (list (read (read-string "Server options (plist): " "(:temperature 0.2)"))))
  (while plist
    (setq copilot-lsp-initialization-options
          (plist-put copilot-lsp-initialization-options (car plist) (cadr plist)))
    (setq plist (cddr plist)))
  (when (and (fboundp 'eglot-current-server) (fboundp 'jsonrpc-notify))
    (let ((server (eglot-current-server)))
      (when server
        (jsonrpc-notify server :workspace/didChangeConfiguration
                        (list :settings (copilot-lsp-server-options)))))))

(provide 'copilot-lsp)
;;; copilot-lsp.el ends here
