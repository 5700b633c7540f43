# Rewrites a CUDA source (.cu / .cuh) into host C++ for the kernel simulator, keeping every line
# where it was (a #line directive names the original file, so errors, UBSan reports and the
# simulator's messages point at the real source):
#   kernel<<<grid, block, smem, stream>>>(args);  ->
#     ::cudasim::Spec(__FILE__, __LINE__, grid, block, smem, stream)(args) ->* [](auto&... a) { kernel(a...); };
#   __shared__ T a[N], b[M];  ->  static char cudasim_tag_a; auto& a = ::cudasim::shared<T[N]>(&cudasim_tag_a, "a"); ...
# Usage: cmake -DIN=kernels/cuda/x.cu -DOUT=build/.../x.cu.cpp -P transform.cmake
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "transform.cmake: pass -DIN=<source> -DOUT=<output>")
endif()
file(READ "${IN}" text)

# Launches: the kernel expression starts its line (or the line before `<<<`), the configuration is
# on one line, and the statement ends at the first `);`. The kernel is called from a generic lambda
# so that template arguments are deduced from the launch's arguments, as nvcc does.
string(REGEX REPLACE
  "\n([ \t]*)([A-Za-z_][^\n;{}]*)(\n?[ \t]*)<<<([^;\n]*)>>>\\(([^;]*)\\);"
  "\n\\1::cudasim::Spec(__FILE__, __LINE__, \\4)\\3(\\5) ->* [](auto&... cudasim_a) { \\2(cudasim_a...)@@ }@@"
  text "${text}")
if(text MATCHES "<<<")
  string(REGEX MATCH "[^\n]*<<<[^\n]*" bad "${text}")
  message(FATAL_ERROR "transform.cmake: ${IN}: cannot rewrite the launch '${bad}' (the kernel "
                      "expression must start its line or the line before <<<, the configuration "
                      "must be on one line and the statement must end at the first ');')")
endif()
string(REPLACE "@@" ";" text "${text}")

# __shared__ declarations (one line each, up to the semicolon)
# (only where __shared__ starts a line: the word in a comment is left alone)
string(REGEX MATCHALL "\n[ \t]*__shared__ [^;\n]*" decls "${text}")
foreach(decl IN LISTS decls)
  string(REGEX MATCH "^\n[ \t]*" indent "${decl}")
  string(REGEX REPLACE "^\n[ \t]*__shared__ +" "" body "${decl}")
  string(REPLACE "], " "]@@" body "${body}")
  string(REPLACE "@@" ";" parts "${body}")
  set(type "")
  set(out "")
  foreach(part IN LISTS parts)
    string(STRIP "${part}" part)
    string(FIND "${part}" "[" bracket)
    if(bracket EQUAL -1)
      set(head "${part}")
      set(dims "")
    else()
      string(SUBSTRING "${part}" 0 ${bracket} head)
      string(SUBSTRING "${part}" ${bracket} -1 dims)
    endif()
    string(STRIP "${head}" head)
    if(NOT head MATCHES "([A-Za-z_][A-Za-z0-9_]*)$")
      message(FATAL_ERROR "transform.cmake: ${IN}: cannot read the __shared__ declaration '${decl}'")
    endif()
    set(name "${CMAKE_MATCH_1}")
    if(type STREQUAL "")
      string(REGEX REPLACE "[A-Za-z_][A-Za-z0-9_]*$" "" type "${head}")
      string(STRIP "${type}" type)
      if(type STREQUAL "")
        message(FATAL_ERROR "transform.cmake: ${IN}: no type in the __shared__ declaration '${decl}'")
      endif()
    endif()
    string(APPEND out "static char cudasim_tag_${name}@@ auto& ${name} = ::cudasim::shared<${type}${dims}>(&cudasim_tag_${name}, \"${name}\")@@ ")
  endforeach()
  string(REGEX REPLACE "@@ $" "" out "${out}")
  string(REPLACE "@@" ";" out "${out}")
  string(REPLACE "${decl}" "${indent}${out}" text "${text}")
endforeach()

file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
