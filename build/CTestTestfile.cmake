# CMake generated Testfile for 
# Source directory: /work/main
# Build directory: /work/main/build
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
add_test(unit_test_core_config_time "/work/main/build/test_core_config_time")
set_tests_properties(unit_test_core_config_time PROPERTIES  _BACKTRACE_TRIPLES "/work/main/CMakeLists.txt;79;add_test;/work/main/CMakeLists.txt;0;")
add_test(unit_test_envelope_fixtures "/work/main/build/test_envelope_fixtures")
set_tests_properties(unit_test_envelope_fixtures PROPERTIES  _BACKTRACE_TRIPLES "/work/main/CMakeLists.txt;79;add_test;/work/main/CMakeLists.txt;0;")
add_test(unit_test_envelope_rules "/work/main/build/test_envelope_rules")
set_tests_properties(unit_test_envelope_rules PROPERTIES  _BACKTRACE_TRIPLES "/work/main/CMakeLists.txt;79;add_test;/work/main/CMakeLists.txt;0;")
add_test(unit_test_store_pipeline "/work/main/build/test_store_pipeline")
set_tests_properties(unit_test_store_pipeline PROPERTIES  _BACKTRACE_TRIPLES "/work/main/CMakeLists.txt;79;add_test;/work/main/CMakeLists.txt;0;")
