# Registers a GoogleTest executable's tests with CTest a few at a time: the tests of one suite, at
# most CHUNK of them in one process. Every process first loads LibTorch (0.42 s on the 2-core CI
# machine, more under AddressSanitizer), which one process per test paid over 700 times: the unit
# suite ran in 32 s as one process and took several minutes as one process per test.
#
# Run after each build of the executable (the tests it holds can change):
#   cmake -D TEST_EXECUTABLE=... -D CTEST_FILE=... -D LABEL=unit -D CHUNK=8 -D WORKING_DIRECTORY=...
#         -P gtest_chunks.cmake
# Each CTest test is named by its gtest filter ("Suite.A:Suite.B"), so `ctest -R NAME` still finds a
# test by name and the name is the command that re-runs it alone: TEST --gtest_filter=NAME.
# A skipped test leaves its chunk passed (its output says SKIPPED), never hides a failure.
cmake_minimum_required(VERSION 3.18)

execute_process(COMMAND "${TEST_EXECUTABLE}" --gtest_list_tests
                OUTPUT_VARIABLE listing ERROR_VARIABLE errors RESULT_VARIABLE rc TIMEOUT 120)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${TEST_EXECUTABLE} --gtest_list_tests failed (${rc}):\n${errors}")
endif()

string(REPLACE ";" "," listing "${listing}")  # a GetParam() comment may hold a semicolon
string(REPLACE "\n" ";" lines "${listing}")
set(script "")
set(suite "")
set(chunk "")
set(count 0)
macro(flush)
  if(chunk)
    list(JOIN chunk ":" filter)
    string(APPEND script "add_test([=[${filter}]=] \"${TEST_EXECUTABLE}\" [=[--gtest_filter=${filter}]=])\n"
           "set_tests_properties([=[${filter}]=] PROPERTIES LABELS ${LABEL} WORKING_DIRECTORY \"${WORKING_DIRECTORY}\" "
           "ENVIRONMENT \"OMP_NUM_THREADS=1;OMP_WAIT_POLICY=PASSIVE\")\n")
    math(EXPR count "${count} + 1")
  endif()
  set(chunk "")
endmacro()
foreach(line IN LISTS lines)
  if(line MATCHES "^([^ #][^ ]*)\\.( .*)?$")
    flush()
    set(suite "${CMAKE_MATCH_1}")
  elseif(line MATCHES "^  ([^ ]+)")
    list(APPEND chunk "${suite}.${CMAKE_MATCH_1}")
    list(LENGTH chunk n)
    if(n GREATER_EQUAL CHUNK)
      flush()
    endif()
  endif()
endforeach()
flush()
if(count EQUAL 0)
  message(FATAL_ERROR "${TEST_EXECUTABLE} lists no tests.")
endif()
file(WRITE "${CTEST_FILE}.tmp" "${script}")
file(RENAME "${CTEST_FILE}.tmp" "${CTEST_FILE}")
