# shellcheck shell=bash
# `SCRIPT --help` (or -h) prints the script's header comment, which says what it does and how
# it is called, and exits 0 before the script does anything.
print_usage_on_help() {
  local script=$1
  shift
  case ${1:-} in
    -h | --help)
      sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$script"
      exit 0
      ;;
  esac
}
