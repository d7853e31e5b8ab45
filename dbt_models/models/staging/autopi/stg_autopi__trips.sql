-- One row per AutoPi trip: the trip object of its latest landed export. Files are named by
-- trip id, so a re-export already replaced the earlier rows; the window only guards against a
-- trip whose start day moved between exports and whose old file a crash left behind.
-- Daily by lake day (the trip's UTC start day). A re-export that moves a trip's start day
-- removes the old day's file; the old day's row goes when that day is rebuilt (the landing's
-- `days_written` names the new day only: the unique test on source_trip_id says so until then).
{{ daily_table('day') }}

with source as (
    {{ lake_source('autopi', 'trips', {
        'trip_id': 'varchar',
        'device_id': 'varchar',
        'vehicle_id': 'bigint',
        'started_at': 'timestamptz',
        'ended_at': 'timestamptz',
        'duration_s': 'double',
        'distance_km': 'double',
        'start_lat': 'double',
        'start_lon': 'double',
        'start_address': 'varchar',
        'end_lat': 'double',
        'end_lon': 'double',
        'end_address': 'varchar',
        'tag': 'varchar',
        'personal': 'boolean',
        'last_recalc_at': 'timestamptz',
        'task_id': 'bigint',
        'export_sha256': 'varchar',
        'datapoints': 'bigint',
        'malformed_lines': 'bigint',
        'undeclared_keys': 'varchar',
        'landed_at': 'timestamptz',
        'day': 'date',
    }) }}
),

renamed as (
    select
        md5('autopi|' || trip_id) as autopi_trip_id,
        trip_id as source_trip_id,
        device_id as source_vehicle_id,
        vehicle_id as autopi_vehicle_id,
        cast(started_at as timestamptz) as started_at,
        cast(ended_at as timestamptz) as ended_at,
        duration_s,
        distance_km,
        start_lat,
        start_lon,
        start_address,
        end_lat,
        end_lon,
        end_address,
        tag as trip_tag,
        personal as is_personal,
        cast(last_recalc_at as timestamptz) as last_recalc_at,
        task_id,
        export_sha256,
        datapoints as datapoint_count,
        malformed_lines,
        undeclared_keys,
        cast(landed_at as timestamptz) as landed_at,
        cast(day as date) as day
    from source
),

final as (
    {{ latest_landing('renamed', 'source_trip_id', 'landed_at desc') }}
)

select * from final
