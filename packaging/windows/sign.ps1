# Authenticode signing for the Windows build (tauri.windows.conf.json's
# signCommand): Tauri runs it once for every .exe it builds and for the MSI
# and NSIS installers, with the file's path as the only argument.
#
# IT's certificate stays in IT's certificate store (or on its token or HSM);
# this file names none. Set, in the build's environment:
#   MEDTEXT_SIGN_THUMBPRINT   SHA-1 thumbprint of the code-signing certificate
#   MEDTEXT_TIMESTAMP_URL     IT's RFC 3161 timestamp server
#   TAURI_WINDOWS_SIGNTOOL_PATH (optional) signtool.exe, if it is not on PATH
#
# Not built or run in MedText's CI (Linux only): see docs/admin-guide.md,
# "Windows and macOS".
param([Parameter(Mandatory = $true)][string]$File)
$ErrorActionPreference = "Stop"

foreach ($name in "MEDTEXT_SIGN_THUMBPRINT", "MEDTEXT_TIMESTAMP_URL") {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        throw "$name is not set: see docs/admin-guide.md, 'Building and signing on Windows'"
    }
}
$signtool = $env:TAURI_WINDOWS_SIGNTOOL_PATH
if (-not $signtool) { $signtool = "signtool.exe" }

& $signtool sign /sha1 $env:MEDTEXT_SIGN_THUMBPRINT /fd SHA256 `
    /tr $env:MEDTEXT_TIMESTAMP_URL /td SHA256 /d "MedText" $File
if ($LASTEXITCODE -ne 0) { throw "signtool failed ($LASTEXITCODE) on $File" }
& $signtool verify /pa $File
if ($LASTEXITCODE -ne 0) { throw "the signature of $File does not verify" }
